// Front end of demo.widget.ChatWidget: an anywidget ES module, loaded as a string, no build step, no network.
// Everything that comes from a note or a model is written with textContent, except two fields the kernel made
// into HTML with demo.format.render_markdown (raw HTML and images off): `answer_html` and each source's `html`.
// Only kernelHtml() inserts them.

function node(tag, attrs = {}, children = []) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "text") el.textContent = value;
    else el.setAttribute(key, value);
  }
  for (const child of children) el.appendChild(child);
  return el;
}

// HTML rendered in the kernel by render_markdown; links open in a new tab, never in the notebook's own page.
function kernelHtml(el, html) {
  el.innerHTML = html;
  for (const link of el.querySelectorAll("a[href]")) {
    link.setAttribute("target", "_blank");
    link.setAttribute("rel", "noopener noreferrer");
  }
}

function sourceItem(source) {
  const width = Math.max(0, Math.min(1, Number(source.score) || 0)) * 100;
  const bar = node("div", { class: "ragchat-bar", title: `cosine similarity ${source.score}` }, [
    node("div", { class: "ragchat-bar-fill", style: `width:${width.toFixed(0)}%` }),
  ]);
  const parts = [
    node("span", { class: "ragchat-relevance", "data-role": "relevance",
      title: "relevance: the score search ranked the sources by",
      text: `relevance ${Number(source.rank_score).toFixed(2)}` }),
    node("span", { class: "ragchat-cosine", title: "cosine similarity between the question and this passage" }, [
      document.createTextNode("cosine "),
      node("code", { "data-role": "score", text: Number(source.score).toFixed(3) }),
    ]),
    bar,
  ];
  if (source.percentile !== null && source.percentile !== undefined) {
    parts.push(node("span", {
      class: "ragchat-percentile", "data-role": "percentile", text: `p${Number(source.percentile).toFixed(1)}`,
      title: "share of pairs of unrelated chunks in these notes that score lower",
    }));
  }
  if (source.weak) parts.push(node("span", { class: "ragchat-weak", "data-role": "weak", text: "weak match" }));
  const score = node("div", { class: "ragchat-score" }, parts);
  const head = node("div", { class: "ragchat-source-head" }, [
    node("span", { class: "ragchat-rank", "data-role": "number", text: `[${source.number}]` }),
    node("b", { "data-role": "title", text: source.title || source.source }),
  ]);
  const meta = [];
  // The kernel sends every field formatted by the library (section, location): nothing is re-derived here.
  if (source.section) {
    meta.push(node("div", { class: "ragchat-heading", "data-role": "heading", text: source.section }));
  }
  meta.push(node("code", { class: "ragchat-location", "data-role": "location", text: source.location }));
  if (source.tags && source.tags.length) {
    meta.push(node("span", { class: "ragchat-tags", text: `  #${source.tags.join(" #")}` }));
  }
  const passage = node("div", { class: "ragchat-text ragchat-clipped", "data-role": "passage" });
  kernelHtml(passage, source.html || "");
  const more = node("button", { type: "button", class: "ragchat-more", "data-role": "more", text: "Show all" });
  more.addEventListener("click", () => {
    const clipped = passage.classList.toggle("ragchat-clipped");
    more.textContent = clipped ? "Show all" : "Show less";
  });
  // A passage that fits needs neither the fade nor the button.
  requestAnimationFrame(() => {
    if (passage.scrollHeight <= passage.clientHeight + 1) {
      passage.classList.remove("ragchat-clipped");
      more.style.display = "none";
    }
  });
  const classes = "ragchat-source" + (source.cited ? " ragchat-cited" : "") + (source.weak ? " ragchat-is-weak" : "");
  return node("li", { class: classes, "data-role": "source", "data-number": String(source.number) },
    [score, head, ...meta, passage, more]);
}

function turnItem(message) {
  const who = message.role === "user" ? "You" : "Answer";
  return node("li", { class: `ragchat-turn ragchat-turn-${message.role === "user" ? "user" : "assistant"}`,
    "data-role": "turn" }, [
    node("b", { text: `${who}: ` }),
    node("span", { text: message.content || "" }),
  ]);
}

// anywidget keeps one stylesheet per widget class, and a notebook's saved widget state carries the stylesheet of
// the code that saved it: restored when the notebook opens, it can replace this one. Each view puts its own back.
function keepOwnStylesheet(model) {
  const css = model.get("_css");
  for (const style of document.querySelectorAll("style")) {
    if (style.id === model.get("_anywidget_id") && css && style.textContent !== css) style.textContent = css;
  }
}

function render({ model, el }) {
  keepOwnStylesheet(model);
  const question = node("input", { type: "text", class: "ragchat-input", "data-role": "question",
    placeholder: "Ask the knowledge base…" });
  const askButton = node("button", { type: "button", class: "ragchat-button", "data-role": "ask", text: "Ask" });
  const stopButton = node("button", { type: "button", class: "ragchat-button ragchat-stop", "data-role": "stop",
    text: "Stop" });
  const resetButton = node("button", { type: "button", class: "ragchat-button ragchat-secondary",
    "data-role": "reset", text: "New conversation", title: "Forget the earlier questions: ask the next on its own" });
  const onlyTags = node("input", { type: "text", class: "ragchat-input ragchat-filter", "data-role": "only-tags",
    placeholder: "only tags (all of them)" });
  const onlyPaths = node("input", { type: "text", class: "ragchat-input ragchat-filter", "data-role": "only-paths",
    placeholder: "only paths, e.g. recipes/* (any)" });
  onlyTags.value = (model.get("tags") || []).join(", ");
  onlyPaths.value = (model.get("paths") || []).join(", ");
  const history = node("ol", { class: "ragchat-history", "data-role": "history" });
  const historyBox = node("details", { class: "ragchat-conversation", "data-role": "conversation", open: "" }, [
    node("summary", { text: "Earlier in this conversation" }), history,
  ]);
  const status = node("div", { class: "ragchat-status", "data-role": "status" });
  const error = node("div", { class: "ragchat-error", "data-role": "error" });
  const searched = node("div", { class: "ragchat-searched", "data-role": "searched" });
  const answer = node("div", { class: "ragchat-answer", "data-role": "answer" });
  const caption = node("div", { class: "ragchat-caption", "data-role": "sources-caption" });
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
    historyBox,
    node("div", { class: "ragchat-row" }, [question, askButton, stopButton, resetButton]),
    node("div", { class: "ragchat-row ragchat-filters" }, [onlyTags, onlyPaths]),
    status, error, notice, searched, answer, caption, sources, noteForm,
  ]);
  el.appendChild(root);

  const ask = () => {
    const text = question.value.trim();
    if (text && !model.get("busy")) {
      model.send({ type: "ask", question: text, tags: onlyTags.value, paths: onlyPaths.value });
    }
  };
  const addNote = () => {
    model.send({ type: "add_note", title: noteTitle.value, tags: noteTags.value, body: noteBody.value });
  };
  askButton.addEventListener("click", ask);
  question.addEventListener("keydown", (event) => {
    if (event.key === "Enter") ask();
  });
  stopButton.addEventListener("click", () => model.send({ type: "stop" }));
  resetButton.addEventListener("click", () => {
    question.value = "";
    model.send({ type: "reset" });
  });
  noteButton.addEventListener("click", addNote);
  // A citation [n] in the answer points at its source: a click brings it into view.
  answer.addEventListener("click", (event) => {
    const cite = event.target.closest ? event.target.closest(".ragchat-cite") : null;
    const number = cite ? cite.getAttribute("data-source") : null;
    const item = number ? sources.querySelector(`[data-number="${CSS.escape(number)}"]`) : null;
    if (!item) return;
    item.scrollIntoView({ block: "nearest" });
    item.classList.remove("ragchat-flash");
    void item.offsetWidth; // restart the animation
    item.classList.add("ragchat-flash");
  });

  const showState = () => {
    const busy = model.get("busy");
    status.textContent = busy;
    askButton.disabled = Boolean(busy);
    stopButton.style.display = model.get("writing") ? "" : "none";
    resetButton.disabled = !model.get("history").length && !model.get("answer");
    noteButton.disabled = Boolean(busy) || model.get("read_only");
    error.textContent = model.get("error");
    notice.textContent = model.get("notice");
    noteForm.style.display = model.get("read_only") ? "none" : "";
    if (document.activeElement !== question && model.get("question")) question.value = model.get("question");
  };
  const showAnswer = () => {
    const text = model.get("searched");
    searched.textContent = text ? `Searched for: ${text}` : "";
    searched.style.display = text ? "" : "none";
    kernelHtml(answer, model.get("answer_html"));
    answer.classList.toggle("ragchat-drafting", Boolean(model.get("writing")));
    answer.setAttribute("data-mode", model.get("mode"));
  };
  const showSources = () => {
    const rows = model.get("sources") || [];
    caption.textContent = rows.length ? model.get("caption") : "";
    sources.replaceChildren(...rows.map(sourceItem));
  };
  const showHistory = () => {
    const turns = model.get("history") || [];
    history.replaceChildren(...turns.map(turnItem));
    historyBox.style.display = turns.length ? "" : "none";
    showState();
  };
  const showNotice = () => {
    showState();
    // A saved note clears the form, so the same note is not sent twice by accident.
    if (model.get("notice").startsWith("Saved ")) {
      noteTitle.value = "";
      noteTags.value = "";
      noteBody.value = "";
    }
  };
  const handlers = [
    [["busy", "error", "question", "read_only", "writing", "answer"], showState],
    [["answer_html", "searched", "mode", "writing"], showAnswer],
    [["sources", "caption"], showSources],
    [["history"], showHistory],
    [["notice"], showNotice],
  ];
  for (const [names, handler] of handlers) for (const name of names) model.on(`change:${name}`, handler);
  showState();
  showAnswer();
  showSources();
  showHistory();
  return () => {
    for (const [names, handler] of handlers) for (const name of names) model.off(`change:${name}`, handler);
  };
}

export default { render };
