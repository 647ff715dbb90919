// The console's start: sign in (a token, or in open mode a user id), then the
// rider's or the driver's page. Who this tab plays is kept for the tab, so a
// reload connects again and trip.state shows the ride where it is.
import { call } from "./gateway.js";
import { DriverView } from "./driver.js";
import { RideMap } from "./map.js";
import { RiderView } from "./rider.js";
import { clearError, Session, showError } from "./session.js";

const $ = (id) => document.getElementById(id);
const KEPT = "ridesync.console";

function tokenClaims(token) {
  try {
    return JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
  } catch {
    return {};
  }
}

function role() {
  return document.querySelector("input[name=role]:checked").value;
}

function showForm(mode) {
  const form = $("connect");
  form.hidden = false;
  for (const field of form.querySelectorAll("[data-mode]")) field.hidden = field.dataset.mode !== mode;
  const suggest = () => {
    $("user-id").value = `${role()}-${Math.random().toString(16).slice(2, 6)}`;
    for (const field of form.querySelectorAll("[data-role]")) field.hidden = field.dataset.role !== role();
  };
  for (const radio of form.querySelectorAll("input[name=role]")) radio.onchange = suggest;
  $("token").oninput = () => {
    const claimed = tokenClaims($("token").value.trim()).role;
    if (claimed === "rider" || claimed === "driver") {
      document.querySelector(`input[name=role][value=${claimed}]`).checked = true;
      for (const field of form.querySelectorAll("[data-role]")) field.hidden = field.dataset.role !== claimed;
    }
  };
  suggest();
  form.onsubmit = (event) => {
    event.preventDefault();
    const identity = mode === "token" ? { token: $("token").value.trim() } : { userID: $("user-id").value.trim() };
    signIn({ identity, role: role(), packageSlug: $("package").value }, mode);
  };
}

// Asks the gateway who this is before opening a socket: a refused token or id
// is then a message in words (a refused upgrade shows a browser nothing).
async function signIn(kept, mode) {
  try {
    await call(kept.identity, "GET", "/trip/current");
  } catch (error) {
    if (error.status !== 404) {
      showError(`The gateway refused to sign you in: ${error.message} (${error.code}).`);
      return;
    }
  }
  sessionStorage.setItem(KEPT, JSON.stringify(kept));
  clearError();
  start(kept, mode);
}

function start(kept, mode) {
  $("connect").hidden = true;
  $("console").hidden = false;
  const session = new Session(kept.identity, kept.role, kept.packageSlug);
  const userID = kept.identity.userID || tokenClaims(kept.identity.token).sub;
  $("who").textContent = `${kept.role} ${userID}${kept.role === "driver" ? ` (${kept.packageSlug})` : ""}`;
  $("sign-out").hidden = false;
  $("sign-out").onclick = () => {
    session.close();
    sessionStorage.removeItem(KEPT);
    location.reload();
  };
  const map = new RideMap($("map"), window.ridesyncConfig.mapTilesURL);
  const View = kept.role === "rider" ? RiderView : DriverView;
  session.open(new View(session, map));
  document.title = `${kept.role} ${userID}: RideSync console`;
}

async function main() {
  $("error-close").onclick = clearError;
  window.addEventListener("error", (event) => showError(`This page failed: ${event.message}`));
  window.addEventListener("unhandledrejection", (event) => showError(`This page failed: ${event.reason}`));
  let config;
  try {
    config = await (await fetch("/console/config.json")).json();
  } catch (error) {
    showError(`The gateway could not be reached: ${error.message}. Reload when it is back.`);
    return;
  }
  window.ridesyncConfig = config;
  $("mode").textContent = `${config.authMode} mode`;
  const kept = JSON.parse(sessionStorage.getItem(KEPT) || "null");
  if (kept) start(kept, config.authMode);
  else showForm(config.authMode);
}

main();
