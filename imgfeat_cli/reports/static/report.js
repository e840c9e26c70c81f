// imgfeat reports: click a column heading marked data-sort to sort its table (again: reverse).
// Cells sort by their data-v attribute when present (numbers compare as numbers), else by text.
(function () {
  function key(row, col) {
    var cell = row.children[col];
    var v = cell.hasAttribute("data-v") ? cell.getAttribute("data-v") : cell.textContent.trim();
    return /^-?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?$/i.test(v) ? parseFloat(v) : v;
  }
  function sortBy(th) {
    var table = th.closest("table"), body = table.tBodies[0], col = th.cellIndex;
    var desc = th.classList.contains("asc");
    Array.prototype.forEach.call(table.querySelectorAll("th"), function (h) { h.classList.remove("asc", "desc"); });
    th.classList.add(desc ? "desc" : "asc");
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a, col), y = key(b, col);
      var c = (typeof x === "number" && typeof y === "number") ? x - y : String(x).localeCompare(String(y));
      return desc ? -c : c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  document.addEventListener("click", function (ev) {
    var th = ev.target.closest && ev.target.closest("th[data-sort]");
    if (th) { sortBy(th); }
  });
})();
