// Index table: click a header to sort (numbers or text, empty cells last), type to filter rows.
(function () {
  "use strict";
  var table = document.getElementById("ix");
  if (!table) return;
  var body = table.tBodies[0];
  var headers = Array.prototype.slice.call(table.tHead.rows[0].cells);

  function key(row, index, type) {
    var raw = row.cells[index].getAttribute("data-sort");
    if (raw === null || raw === "") return null;
    if (type === "num") {
      var value = parseFloat(raw);
      return isNaN(value) ? null : value;
    }
    return raw.toLowerCase();
  }

  function sortBy(th) {
    var index = headers.indexOf(th);
    var type = th.getAttribute("data-type");
    var ascending = th.getAttribute("aria-sort") !== "ascending";
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a, index, type), y = key(b, index, type);
      if (x === null && y === null) return 0;
      if (x === null) return 1; // empty cells last either way
      if (y === null) return -1;
      var order = x < y ? -1 : x > y ? 1 : 0;
      return ascending ? order : -order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
    headers.forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  }

  headers.forEach(function (th) {
    if (!th.classList.contains("sortable")) return;
    th.querySelector("button").addEventListener("click", function () { sortBy(th); });
  });

  var filter = document.getElementById("ix-filter");
  var count = document.getElementById("ix-count");
  if (!filter) return;
  function apply() {
    var needle = filter.value.trim().toLowerCase();
    var shown = 0;
    Array.prototype.forEach.call(body.rows, function (row) {
      var match = row.getAttribute("data-ticker").toLowerCase().indexOf(needle) !== -1;
      row.hidden = !match;
      if (match) shown += 1;
    });
    count.textContent = needle ? shown + " of " + body.rows.length : "";
  }
  filter.addEventListener("input", apply);
  apply();
})();
