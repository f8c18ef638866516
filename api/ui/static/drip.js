// Progressive enhancement only: every page works without it.
// Dates: shown in the viewer's local time; the UTC value stays in the title (on hover).
"use strict";
(function () {
  const format = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      const moment = new Date(el.getAttribute("datetime"));
      if (!isNaN(moment)) el.textContent = format.format(moment);
    });
  }
  document.addEventListener("DOMContentLoaded", function () { localTimes(document); });
  // htmx swaps in fresh numbers: format their dates too.
  document.addEventListener("htmx:afterSettle", function (event) { localTimes(event.target); });
})();
