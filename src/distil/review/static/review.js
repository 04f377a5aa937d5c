// Small conveniences; every page works without them.
document.addEventListener("DOMContentLoaded", function () {
  // Each probability bar's width is its probability (set here: the stylesheet policy forbids inline styles).
  document.querySelectorAll(".dist .fill").forEach(function (el) {
    el.style.width = (100 * parseFloat(el.dataset.p || "0")).toFixed(1) + "%";
  });
  // Choosing a slice filters at once.
  var slice = document.getElementById("slice");
  if (slice && slice.form) {
    slice.addEventListener("change", function () { slice.form.submit(); });
  }
});
