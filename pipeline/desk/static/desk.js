// The desk's only script (served from the desk itself: the page allows no inline script).
document.addEventListener("DOMContentLoaded", () => {
  const page = document.getElementById("select-page");
  if (page) {
    page.addEventListener("change", () => {
      document.querySelectorAll("input.select-row").forEach((box) => { box.checked = page.checked; });
    });
  }
  const bulk = document.getElementById("bulk");
  if (bulk) {
    bulk.addEventListener("submit", (event) => {
      const action = document.getElementById("bulk-action").value;
      const all = document.getElementById("select-all-matching").checked;
      const count = all ? "all matching" : document.querySelectorAll("input.select-row:checked").length;
      if (action === "publish" || action === "approve_publish") {
        if (!window.confirm(`Publish ${count} article(s) to the site's targets?`)) event.preventDefault();
      }
    });
  }
});
