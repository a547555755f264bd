// pinfleet dashboard: refreshes main#main every few seconds while the tab
// is visible. The pages work without it; it only polls the same URL with
// X-Pinfleet-Partial: 1 and swaps in the answer.
(function () {
  "use strict";
  var main = document.getElementById("main");
  if (!main || !main.dataset.poll) { return; }
  var every = parseInt(main.dataset.poll, 10) || 5000;
  var busy = false;
  function typing() {
    var a = document.activeElement;
    return a && main.contains(a) && (a.tagName === "INPUT" || a.tagName === "TEXTAREA");
  }
  function tick() {
    if (busy || document.hidden || typing()) { return; }
    busy = true;
    fetch(window.location.href, {
      headers: { "X-Pinfleet-Partial": "1" },
      credentials: "same-origin",
      cache: "no-store"
    }).then(function (r) {
      if (r.headers.get("X-Pinfleet-Partial") === "1") { return r.text(); }
      // Logged out or an error page: show it whole.
      window.location.reload();
      return null;
    }).then(function (html) {
      if (typeof html === "string") { main.innerHTML = html; }
    }).catch(function () { /* the next tick retries */ }).then(function () {
      busy = false;
    });
  }
  setInterval(tick, every);
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) { tick(); }
  });
}());
