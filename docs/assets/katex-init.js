// Render the math that pymdownx.arithmatex (generic mode) leaves in <span|div class="arithmatex">,
// with the KaTeX copy served beside this file: the site needs no network to show formulas.
// Material's instant navigation swaps pages without a reload, so render on every page it shows.
document$.subscribe(() => {
  for (const node of document.querySelectorAll(".arithmatex")) {
    renderMathInElement(node, {
      delimiters: [
        { left: "\\(", right: "\\)", display: false },
        { left: "\\[", right: "\\]", display: true },
      ],
      throwOnError: false,
    });
  }
});
