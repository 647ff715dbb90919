"""Geohash encoding: a point as a short base-32 string whose prefixes are
ever larger boxes around it, so nearby drivers share a prefix."""

BASE32 = "0123456789bcdefghjkmnpqrstuvwxyz"
PRECISION = 9  # characters; a box of about 5 m by 5 m


def encode(latitude, longitude, precision=PRECISION):
    lat_range, lon_range = [-90.0, 90.0], [-180.0, 180.0]
    chars, bits, bit_count, use_longitude = [], 0, 0, True
    while len(chars) < precision:
        value, span = (longitude, lon_range) if use_longitude else (latitude, lat_range)
        middle = (span[0] + span[1]) / 2
        bits <<= 1
        if value >= middle:
            bits |= 1
            span[0] = middle
        else:
            span[1] = middle
        use_longitude = not use_longitude
        bit_count += 1
        if bit_count == 5:
            chars.append(BASE32[bits])
            bits, bit_count = 0, 0
    return "".join(chars)
