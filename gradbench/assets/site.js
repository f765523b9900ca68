// gradbench report --html: click a column header to sort its table (again to reverse), type in the
// filter box to hide the rows that do not contain the text. No library, no network.
(function () {
  "use strict";

  var NUMBER = /^[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?/i;

  function sortKey(cell) {
    var given = cell.getAttribute("data-sort");
    var text = (given !== null ? given : cell.textContent).trim();
    var m = NUMBER.exec(text);
    return { num: m ? parseFloat(m[0]) : null, text: text.toLowerCase() };
  }

  // numbers (in order), then text (in order), then empty cells and "—", whatever the direction
  function rank(k) {
    if (k.num !== null) return 0;
    return k.text === "" || k.text === "\u2014" ? 2 : 1;
  }

  function compare(a, b, dir) {
    var ra = rank(a), rb = rank(b);
    if (ra !== rb) return ra - rb;
    if (ra === 0 && a.num !== b.num) return dir * (a.num - b.num);
    if (a.text === b.text) return 0;
    return dir * (a.text < b.text ? -1 : 1);
  }

  function sortTable(table, col, th) {
    var dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
    var body = table.tBodies[0];
    var rows = Array.prototype.map.call(body.rows, function (row, i) {
      return { row: row, key: sortKey(row.cells[col] || row), i: i };
    });
    rows.sort(function (a, b) { return compare(a.key, b.key, dir) || a.i - b.i; });
    rows.forEach(function (r) { body.appendChild(r.row); });
  }

  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    if (!table.tHead || !table.tBodies.length) return;
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
      th.tabIndex = 0;
      th.title = "sort by this column";
      th.addEventListener("click", function () { sortTable(table, col, th); });
      th.addEventListener("keydown", function (e) {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortTable(table, col, th); }
      });
    });
  });

  var box = document.getElementById("filter");
  var count = document.getElementById("filter-count");
  if (box) {
    box.addEventListener("input", function () {
      var q = box.value.trim().toLowerCase(), shown = 0, total = 0;
      Array.prototype.forEach.call(document.querySelectorAll("table.filterable tbody tr"), function (tr) {
        var hide = q !== "" && tr.textContent.toLowerCase().indexOf(q) < 0;
        tr.hidden = hide;
        total += 1;
        shown += hide ? 0 : 1;
      });
      if (count) count.textContent = q === "" ? "" : shown + " of " + total + " rows";
    });
  }
})();
