// The map: the route, the pickup, the destination and the car, drawn on a
// plain background when there are no tiles (offline), on tiles when the
// gateway names a tile server (MAP_TILES_URL).
const START = [37.78, -122.4];

export function routePoints(route) {
  return (route && route.geometry || []).flatMap((line) => line.coordinates || []);
}

function latLng(point) {
  return [point.latitude, point.longitude];
}

export class RideMap {
  constructor(element, tilesURL) {
    this.map = L.map(element, { center: START, zoom: 14 });
    if (tilesURL) {
      const host = tilesURL.split("/")[2] || tilesURL;
      L.tileLayer(tilesURL, { maxZoom: 19, attribution: `map tiles: ${host}` }).addTo(this.map);
    } else {
      element.classList.add("offline");
    }
    L.control.scale().addTo(this.map);
    this.layers = {};
  }

  onClick(handle) {
    this.map.on("click", (event) => handle({ latitude: event.latlng.lat, longitude: event.latlng.lng }));
  }

  place(name, point, color) {
    this._drop(name);
    if (!point) return;
    this.layers[name] = L.circleMarker(latLng(point), { radius: 9, color, fillColor: color, fillOpacity: 0.8 })
      .bindTooltip(name, { permanent: true, direction: "top", className: "place" })
      .addTo(this.map);
  }

  route(route) {
    this._drop("route");
    const points = routePoints(route).map(latLng);
    if (points.length < 2) return;
    this.layers.route = L.polyline(points, { color: "#1f6feb", weight: 5, opacity: 0.75 }).addTo(this.map);
    this.map.fitBounds(this.layers.route.getBounds(), { padding: [40, 40] });
  }

  // heading: degrees clockwise from north; null or absent (not yet moved): facing east.
  car(point, heading) {
    if (!point) return this._drop("car");
    const html = `<div class="car" style="transform: rotate(${(heading ?? 90) - 90}deg)"></div>`;
    const icon = L.divIcon({ html, className: "car-icon", iconSize: [0, 0] });
    if (this.layers.car) {
      this.layers.car.setLatLng(latLng(point)).setIcon(icon);
    } else {
      this.layers.car = L.marker(latLng(point), { icon, title: "car" }).addTo(this.map);
    }
  }

  trip(trip) {
    const points = routePoints(trip && trip.route);
    this.place("Pickup", points[0], "#2da44e");
    this.place("Destination", points[points.length - 1], "#cf222e");
    this.route(trip && trip.route);
  }

  _drop(name) {
    if (this.layers[name]) {
      this.layers[name].remove();
      delete this.layers[name];
    }
  }
}
