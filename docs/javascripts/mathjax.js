// MathJax 3 settings for pymdownx.arithmatex (generic mode): it wraps $$ ... $$ blocks and \( ... \) inline
// math in elements of class "arithmatex"; MathJax typesets those and nothing else.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"]],
    displayMath: [["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex"
  }
};
