// The upload form through XMLHttpRequest, so that the bytes sent drive the progress bar.
// Without JavaScript the same form is a plain multipart POST and the page reloads.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("upload");
  if (!form) return;
  const bar = document.getElementById("upload-progress");
  const status = document.getElementById("upload-status");
  const button = form.querySelector("button");
  const say = (text, state) => { status.textContent = text; status.dataset.state = state; };
  // The table above gets the new row (or the refused image's state) without a reload.
  // Swapped only if the answer has one: a session that ended answers the login page.
  const refresh = () => fetch("/images")
    .then((answer) => (answer.ok ? answer.text() : ""))
    .then((html) => {
      const page = new DOMParser().parseFromString(html, "text/html");
      const fresh = page.getElementById("images-table");
      const table = document.getElementById("images-table");
      if (fresh && table) table.replaceWith(document.adoptNode(fresh));
    })
    .catch(() => { /* the table stays as it was; the status line says what happened */ });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const xhr = new XMLHttpRequest();
    xhr.open("POST", form.action);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.onprogress = (e) => {
      if (!e.lengthComputable) return;
      bar.max = e.total;
      bar.value = e.loaded;
      say(`sent ${Math.round((100 * e.loaded) / e.total)} %`, "SENDING");
    };
    xhr.upload.onload = () => say("sent; converting…", "CONVERTING");
    xhr.onload = () => {
      button.disabled = false;
      let answer = {};
      try { answer = JSON.parse(xhr.responseText); } catch (_) { /* an HTML error page */ }
      if (xhr.status < 300) say(`${answer.name} is ${answer.state}`, answer.state);
      else say(`error: ${answer.error || xhr.statusText}`, "ERROR");
      refresh();
    };
    xhr.onerror = () => {
      button.disabled = false;
      say("error: the upload did not get through", "ERROR");
      refresh();
    };
    bar.hidden = false;
    bar.value = 0;
    button.disabled = true;
    say("sending…", "SENDING");
    xhr.send(new FormData(form));
  });
});
