// Event Flow portal: optional improvements only; every page works without it.
(function () {
  "use strict";
  // Live check of an endpoint's CEL filter, with the server's own compiler.
  var form = document.getElementById("endpoint-form");
  var filter = document.getElementById("filter");
  var status = document.getElementById("filter_status");
  if (form && filter && status) {
    var timer = null;
    var check = function () {
      var body = new URLSearchParams();
      body.set("csrf", form.querySelector("input[name=csrf]").value);
      body.set("filter", filter.value);
      fetch("/portal/check-filter", { method: "POST", body: body, credentials: "same-origin" })
        .then(function (r) { return r.json(); })
        .then(function (r) {
          status.textContent = filter.value.trim() === "" ? "" : (r.ok ? "✓ The filter is valid." : "✗ " + r.error);
          status.className = r.ok ? "help" : "help error-text";
          filter.setAttribute("aria-invalid", r.ok ? "false" : "true");
        })
        .catch(function () {});
    };
    filter.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(check, 250);
    });
    if (filter.value.trim() !== "") check();
  }
  // "all of x.*" ticks (and unticks) its group's types.
  document.querySelectorAll("input[data-all]").forEach(function (all) {
    all.addEventListener("change", function () {
      document.querySelectorAll('input[data-group="' + all.dataset.all + '"]').forEach(function (box) {
        box.checked = all.checked;
      });
    });
  });
})();
