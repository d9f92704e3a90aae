// The sidebar buttons of the article header (the ones a reader sees) open the chapter
// list and the page's table of contents.
//
// sphinx-book-theme 1.3 with pydata-sphinx-theme 0.17 renders each toggle twice: once in
// the (hidden) top navbar and once in the article header. Both themes bind their click
// handlers with document.querySelector, i.e. to the hidden navbar buttons only, so the
// visible buttons do nothing (executablebooks/sphinx-book-theme#935, #917). Here a click
// on a visible button is passed on to the button the themes listen to.
document.addEventListener("DOMContentLoaded", () => {
  for (const side of ["primary", "secondary"]) {
    const bound = document.querySelector(`.${side}-toggle`);
    if (!bound) continue;
    document.querySelectorAll(`.bd-header-article .${side}-toggle`).forEach((button) => {
      if (button === bound) return;
      button.addEventListener(
        "click",
        (event) => {
          event.preventDefault();
          event.stopImmediatePropagation();
          button.blur();
          bound.click();
        },
        true,
      );
    });
  }
});
