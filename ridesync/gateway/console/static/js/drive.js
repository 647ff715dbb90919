// Where a car is after going some distance along a path of points: plain
// geometry for the driver's "drive along the route".
const EARTH_M = 6371000;
const rad = (degrees) => (degrees * Math.PI) / 180;

export function metresBetween(a, b) {
  const dLat = rad(b.latitude - a.latitude);
  const dLon = rad(b.longitude - a.longitude);
  const h = Math.sin(dLat / 2) ** 2 + Math.cos(rad(a.latitude)) * Math.cos(rad(b.latitude)) * Math.sin(dLon / 2) ** 2;
  return 2 * EARTH_M * Math.asin(Math.sqrt(h));
}

export function headingFrom(a, b) {
  const y = Math.sin(rad(b.longitude - a.longitude)) * Math.cos(rad(b.latitude));
  const x = Math.cos(rad(a.latitude)) * Math.sin(rad(b.latitude)) -
            Math.sin(rad(a.latitude)) * Math.cos(rad(b.latitude)) * Math.cos(rad(b.longitude - a.longitude));
  return ((Math.atan2(y, x) * 180) / Math.PI + 360) % 360;
}

// {point, heading, done} after `metres` along `path` (a list of {latitude, longitude}).
export function along(path, metres) {
  let left = metres;
  for (let i = 1; i < path.length; i += 1) {
    const [a, b] = [path[i - 1], path[i]];
    const leg = metresBetween(a, b);
    if (left <= leg) {
      const f = leg ? left / leg : 1;
      const point = { latitude: a.latitude + (b.latitude - a.latitude) * f,
                      longitude: a.longitude + (b.longitude - a.longitude) * f };
      return { point, heading: headingFrom(a, b), done: false };
    }
    left -= leg;
  }
  const last = path[path.length - 1];
  const heading = path.length > 1 ? headingFrom(path[path.length - 2], last) : 90;
  return { point: last, heading, done: true };
}

// Drives along path at km/h, calling report({point, heading}) every second
// until the end; returns a function that stops it.
export function drive(path, kmh, report, onDone) {
  const started = performance.now();
  const tick = () => {
    const metres = ((performance.now() - started) / 1000) * (kmh / 3.6);
    const where = along(path, metres);
    report(where);
    if (where.done) {
      clearInterval(timer);
      onDone();
    }
  };
  const timer = setInterval(tick, 1000);
  tick();
  return () => clearInterval(timer);
}
