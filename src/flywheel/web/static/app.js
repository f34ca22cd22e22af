// Keyboard shortcuts of the review pages. Every shortcut names an element with
// data-key="K": a button or link is clicked, a text box is focused. In a text
// box, ctrl+enter (or cmd+enter) submits its form and escape leaves it.
(function () {
  "use strict";

  function typing(el) {
    return el && (el.tagName === "TEXTAREA" || el.tagName === "SELECT" ||
      (el.tagName === "INPUT" && !["button", "submit", "radio", "checkbox"].includes(el.type)));
  }

  function markDocument(value) {
    var forms = document.querySelectorAll("form.doc-form:not(.marked)");
    if (!forms.length) return;
    var form = forms[0];
    form.classList.add("marked");
    form.querySelector('button[data-doc="' + value + '"]').click();
  }

  document.addEventListener("keydown", function (event) {
    var el = document.activeElement;
    if (typing(el)) {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && el.form) {
        event.preventDefault();
        el.form.requestSubmit();
      } else if (event.key === "Escape") {
        el.blur();
      }
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.key === "y" || event.key === "u") {
      event.preventDefault();
      markDocument(event.key === "y" ? "yes" : "no");
      return;
    }
    var target = document.querySelector('[data-key="' + CSS.escape(event.key) + '"]');
    if (!target) return;
    event.preventDefault();
    if (typing(target)) {
      target.focus();
      if (target.select && target.tagName === "TEXTAREA") target.select();
    } else {
      target.click();
    }
  });
})();
