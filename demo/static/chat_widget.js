// Front end of demo.widget.ChatWidget: an anywidget ES module, loaded as a string, no build step, no network.
// Everything that comes from a note (text, title, heading, path, tags) is written with textContent, never as HTML.

function node(tag, attrs = {}, children = []) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "text") el.textContent = value;
    else el.setAttribute(key, value);
  }
  for (const child of children) el.appendChild(child);
  return el;
}

function source(hit, rank) {
  const width = Math.max(0, Math.min(1, Number(hit.score) || 0)) * 100;
  const bar = node("div", { class: "ragchat-bar", title: `cosine similarity ${hit.score}` }, [
    node("div", { class: "ragchat-bar-fill", style: `width:${width.toFixed(0)}%` }),
  ]);
  const parts = [bar, node("code", { "data-role": "score", text: Number(hit.score).toFixed(3) })];
  if (hit.percentile !== null && hit.percentile !== undefined) {
    parts.push(node("span", {
      class: "ragchat-percentile", "data-role": "percentile", text: `p${Number(hit.percentile).toFixed(1)}`,
      title: "share of pairs of unrelated chunks in these notes that score lower",
    }));
  }
  if (hit.weak) parts.push(node("span", { class: "ragchat-weak", "data-role": "weak", text: "weak match" }));
  const score = node("div", { class: "ragchat-score" }, parts);
  const head = node("div", { class: "ragchat-source-head" }, [
    node("span", { class: "ragchat-rank", text: `${rank}.` }),
    node("b", { "data-role": "title", text: hit.title || hit.source }),
  ]);
  const meta = [];
  // The kernel sends every field formatted by the library (section, location, excerpt): nothing is re-derived here.
  if (hit.section) meta.push(node("div", { class: "ragchat-heading", "data-role": "heading", text: hit.section }));
  meta.push(node("code", { class: "ragchat-location", "data-role": "location", text: hit.location }));
  if (hit.tags && hit.tags.length) meta.push(node("span", { class: "ragchat-tags", text: `  #${hit.tags.join(" #")}` }));
  const text = node("div", { class: "ragchat-text", text: hit.excerpt });
  return node("li", { class: "ragchat-source", "data-role": "source" }, [score, head, ...meta, text]);
}

function render({ model, el }) {
  const question = node("input", { type: "text", class: "ragchat-input", "data-role": "question",
    placeholder: "Ask the knowledge base…" });
  const askButton = node("button", { type: "button", class: "ragchat-button", "data-role": "ask", text: "Ask" });
  const status = node("div", { class: "ragchat-status", "data-role": "status" });
  const error = node("div", { class: "ragchat-error", "data-role": "error" });
  const answer = node("div", { class: "ragchat-answer", "data-role": "answer" });
  const sources = node("ol", { class: "ragchat-sources", "data-role": "sources" });

  const noteTitle = node("input", { type: "text", class: "ragchat-input", "data-role": "note-title",
    placeholder: "Title" });
  const noteTags = node("input", { type: "text", class: "ragchat-input", "data-role": "note-tags",
    placeholder: "tags, comma separated" });
  const noteBody = node("textarea", { class: "ragchat-input", rows: "4", "data-role": "note-body",
    placeholder: "The note, in Markdown" });
  const noteButton = node("button", { type: "button", class: "ragchat-button", "data-role": "add-note",
    text: "Add note" });
  const notice = node("div", { class: "ragchat-notice", "data-role": "notice" });
  const noteForm = node("details", { class: "ragchat-note", "data-role": "note-form" }, [
    node("summary", { text: "Add a note" }),
    noteTitle, noteTags, noteBody, node("div", {}, [noteButton]),
  ]);

  const root = node("div", { class: "ragchat" }, [
    node("div", { class: "ragchat-title", text: "Ask the knowledge base" }),
    node("div", { class: "ragchat-row" }, [question, askButton]),
    status, error, notice, answer, sources, noteForm,
  ]);
  el.appendChild(root);

  const ask = () => {
    const text = question.value.trim();
    if (text) model.send({ type: "ask", question: text });
  };
  const addNote = () => {
    model.send({ type: "add_note", title: noteTitle.value, tags: noteTags.value, body: noteBody.value });
  };
  askButton.addEventListener("click", ask);
  question.addEventListener("keydown", (event) => {
    if (event.key === "Enter") ask();
  });
  noteButton.addEventListener("click", addNote);

  const show = () => {
    const busy = model.get("busy");
    status.textContent = busy;
    askButton.disabled = Boolean(busy);
    noteButton.disabled = Boolean(busy) || model.get("read_only");
    error.textContent = model.get("error");
    notice.textContent = model.get("notice");
    answer.textContent = model.get("answer");
    noteForm.style.display = model.get("read_only") ? "none" : "";
    if (document.activeElement !== question && model.get("question")) question.value = model.get("question");
    const result = model.get("result") || {};
    const hits = result.hits || [];
    sources.replaceChildren(...hits.map((hit, i) => source(hit, i + 1)));
  };
  const showNotice = () => {
    show();
    // A saved note clears the form, so the same note is not sent twice by accident.
    if (model.get("notice")) {
      noteTitle.value = "";
      noteTags.value = "";
      noteBody.value = "";
    }
  };
  const names = ["busy", "error", "answer", "result", "question", "read_only"];
  for (const name of names) model.on(`change:${name}`, show);
  model.on("change:notice", showNotice);
  show();
  return () => {
    for (const name of names) model.off(`change:${name}`, show);
    model.off("change:notice", showNotice);
  };
}

export default { render };
