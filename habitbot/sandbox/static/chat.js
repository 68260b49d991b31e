/* Sandbox chat page of the Telegram Bot API emulator.
 *
 * Plays the user's side through the emulator's control API (/control/...): creates users,
 * writes messages, presses inline buttons, pays invoices, and follows one chat through the
 * transcript long poll (?wait_version=N&timeout=T). Everything shown is built with DOM nodes
 * and text nodes; message formatting comes from the entities the emulator parsed.
 */
"use strict";

(() => {
  const pageQuery = new URLSearchParams(window.location.search);
  const TOKEN = pageQuery.get("token") || "";
  const LONG_POLL_SECONDS = 25;
  const STATUS_INTERVAL_MS = 5000;
  const MIN_POLL_GAP_MS = 1000;
  const TOAST_MS = 5000;
  const CALLBACK_WAIT_MS = 15000;
  const CHECKOUT_WAIT_MS = 10000;
  const TYPING_MS = 5000;
  const STORAGE_KEY = "habitbot-sandbox-user";
  const FIRST_USER_ID = 1001;

  const byId = (id) => document.getElementById(id);
  const ui = {
    app: byId("app"),
    botStatus: byId("bot-status"),
    newUserForm: byId("new-user-form"),
    newUserId: byId("new-user-id"),
    newUserName: byId("new-user-name"),
    newUserLang: byId("new-user-lang"),
    userList: byId("user-list"),
    usersEmpty: byId("users-empty"),
    chatEmpty: byId("chat-empty"),
    chatHead: byId("chat-head"),
    back: byId("back"),
    chatAvatar: byId("chat-avatar"),
    chatName: byId("chat-name"),
    chatSub: byId("chat-sub"),
    chatLang: byId("chat-lang"),
    blockToggle: byId("block-toggle"),
    banner: byId("banner"),
    messages: byId("messages"),
    startBox: byId("start-box"),
    startButton: byId("start-button"),
    replyKeyboard: byId("reply-keyboard"),
    attachPanel: byId("attach-panel"),
    attachToggle: byId("attach-toggle"),
    lat: byId("lat"),
    lon: byId("lon"),
    sendLocation: byId("send-location"),
    sendSticker: byId("send-sticker"),
    sendPhoto: byId("send-photo"),
    sendVoice: byId("send-voice"),
    composer: byId("composer"),
    input: byId("message-input"),
    sendButton: byId("send-button"),
    toasts: byId("toasts"),
    alert: byId("alert"),
    alertText: byId("alert-text"),
    alertOk: byId("alert-ok"),
  };

  const state = {
    botId: TOKEN.includes(":") ? Number(TOKEN.split(":")[0]) : null,
    bot: null,
    emulatorUp: null,
    users: new Map(),
    messageCounts: new Map(),
    newUserIdEdited: false,
    userId: null,
    transcript: null,
    version: -1,
    nodes: new Map(),
    seenAnswers: 0,
    seenCheckouts: 0,
    answeredQueries: new Set(),
    checkoutAnswers: new Map(),
    pendingPresses: new Map(),
    pendingKeys: new Map(),
    pendingCheckouts: new Map(),
    usedOneTimeKeyboard: null,
    replyKeyboardSig: "",
    typingUntil: 0,
    typingTimer: null,
    pollSerial: 0,
    pollAbort: null,
    atBottom: true,
    stickToBottom: false,
    typingText: "",
    blocked: false,
  };

  // ---------------------------------------------------------------- helpers

  class ControlFailure extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  function controlUrl(path, params) {
    const search = new URLSearchParams(params || {});
    if (TOKEN) search.set("token", TOKEN);
    const qs = search.toString();
    return `control/${path}${qs ? `?${qs}` : ""}`;
  }

  async function call(method, path, options = {}) {
    const init = { method, cache: "no-store", signal: options.signal, headers: {} };
    if (options.body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(options.body);
    }
    const response = await fetch(controlUrl(path, options.params), init);
    let payload = null;
    try {
      payload = await response.json();
    } catch (err) {
      payload = null;
    }
    if (!response.ok) {
      const message = (payload && (payload.error || payload.description))
        || `HTTP ${response.status}`;
      throw new ControlFailure(response.status, message);
    }
    return payload;
  }

  function sleep(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
  }

  /* Build an element: props set attributes (never HTML); children are nodes or text. */
  function h(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "className") node.className = value;
      else if (key === "testid") node.setAttribute("data-testid", value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  /* An http(s) URL that is safe to link to, or null. Bare domains get http://. */
  function safeUrl(raw) {
    if (typeof raw !== "string") return null;
    let candidate = raw.trim();
    if (!candidate) return null;
    if (!/^[a-z][a-z0-9+.-]*:/i.test(candidate)) candidate = `http://${candidate}`;
    let url;
    try {
      url = new URL(candidate);
    } catch (err) {
      return null;
    }
    return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
  }

  function formatTime(seconds) {
    const date = new Date(seconds * 1000);
    return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function formatSize(bytes) {
    const size = Number(bytes) || 0;
    if (size < 1024) return `${size} B`;
    if (size < 1024 * 1024) return `${(size / 1024).toFixed(1)} KB`;
    return `${(size / 1024 / 1024).toFixed(1)} MB`;
  }

  function formatAmount(total, currency) {
    const amount = Number(total) || 0;
    if (currency === "XTR") return `${amount} \u2B50`;
    try {
      const format = new Intl.NumberFormat("en", { style: "currency", currency });
      const digits = format.resolvedOptions().maximumFractionDigits;
      return format.format(amount / 10 ** digits);
    } catch (err) {
      return `${amount} ${currency || ""}`.trim();
    }
  }

  function userName(userId) {
    const user = state.users.get(userId);
    return user ? user.first_name : `User ${userId}`;
  }

  function userLang(userId) {
    const user = state.users.get(userId);
    return (user && user.language_code) || "";
  }

  function avatar(node, userId) {
    node.textContent = (userName(userId).trim()[0] || "?").toUpperCase();
    node.setAttribute("data-hue", String(userId % 7));
    return node;
  }

  // ---------------------------------------------------------------- toasts and alert

  function toast(text, kind = "info", url = null) {
    const node = h("div", { className: "toast", testid: "toast", "data-kind": kind, role: "status" },
      text);
    const href = safeUrl(url);
    if (href) {
      node.append(h("a", { href, target: "_blank", rel: "noopener noreferrer" }, "Open link"));
    }
    ui.toasts.append(node);
    setTimeout(() => node.remove(), TOAST_MS);
    return node;
  }

  function showError(err) {
    const message = err instanceof Error ? err.message : String(err);
    toast(message, "error");
  }

  function showAlert(text) {
    ui.alertText.textContent = text;
    ui.alert.hidden = false;
    ui.alertOk.focus();
  }

  function closeAlert() {
    ui.alert.hidden = true;
    if (!ui.composer.hidden) ui.input.focus();
  }

  function setBanner(text, kind = "info") {
    ui.banner.hidden = !text;
    ui.banner.textContent = text || "";
    ui.banner.setAttribute("data-kind", kind);
  }

  // ---------------------------------------------------------------- formatted text

  const BLOCKS = new Set(["blockquote", "expandable_blockquote", "pre"]);
  const LINKISH = new Set(["url", "text_link", "email", "code", "pre", "bot_command", "mention",
    "text_mention", "hashtag", "cashtag", "phone_number"]);

  function entityRank(entity) {
    if (BLOCKS.has(entity.type)) return 0;
    if (entity.type === "text_link" || entity.type === "url") return 1;
    return 2;
  }

  function compareEntities(a, b) {
    return a.start - b.start || b.end - a.end || entityRank(a) - entityRank(b);
  }

  function normalizeEntities(text, entities) {
    const list = [];
    for (const entity of Array.isArray(entities) ? entities : []) {
      if (!entity || typeof entity.type !== "string") continue;
      const start = Math.max(0, Math.min(text.length, Math.trunc(Number(entity.offset)) || 0));
      const length = Math.max(0, Math.trunc(Number(entity.length)) || 0);
      const end = Math.min(text.length, start + length);
      if (end > start) list.push({ ...entity, start, end });
    }
    return list;
  }

  /* URLs and /commands that Telegram would highlight, outside existing link-like entities. */
  function detectEntities(text, existing, withCommands) {
    const found = [];
    const taken = existing.filter((entity) => LINKISH.has(entity.type));
    const free = (start, end) => ![...taken, ...found]
      .some((entity) => start < entity.end && end > entity.start);
    const patterns = [[/\bhttps?:\/\/[^\s<>"]+/gi, "url"]];
    if (withCommands) {
      patterns.push([/(?<![\w/@])\/[A-Za-z0-9_]{1,32}(?:@[A-Za-z0-9_]{3,32})?(?![\w/@])/g,
        "bot_command"]);
    }
    for (const [pattern, type] of patterns) {
      for (const match of text.matchAll(pattern)) {
        let value = match[0];
        if (type === "url") value = value.replace(/[.,;:!?'")\]]+$/, "");
        const start = match.index;
        const end = start + value.length;
        if (end > start && free(start, end)) found.push({ type, start, end });
      }
    }
    return found;
  }

  function linkNode(url) {
    const href = safeUrl(url);
    if (!href) {
      return h("span", { className: "unsafe-link", title: `Not a web link: ${url}` });
    }
    return h("a", { href, target: "_blank", rel: "noopener noreferrer", title: href });
  }

  function entityNode(entity, segment) {
    const leaf = (node) => ({ outer: node, inner: node });
    switch (entity.type) {
      case "bold": return leaf(h("strong"));
      case "italic": return leaf(h("em"));
      case "underline": return leaf(h("u"));
      case "strikethrough": return leaf(h("s"));
      case "code": return leaf(h("code"));
      case "pre": {
        const code = h("code");
        const pre = h("pre", { "data-language": entity.language || null }, code);
        return { outer: pre, inner: code };
      }
      case "blockquote": return leaf(h("blockquote"));
      case "expandable_blockquote": {
        const quote = h("blockquote", { className: "expandable", title: "Show more" });
        quote.addEventListener("click", () => quote.classList.add("expanded"));
        return leaf(quote);
      }
      case "spoiler": {
        const spoiler = h("span", {
          className: "spoiler", testid: "spoiler", role: "button", tabindex: "0",
          title: "Show spoiler",
        });
        const reveal = () => spoiler.classList.add("revealed");
        spoiler.addEventListener("click", reveal);
        spoiler.addEventListener("keydown", (event) => {
          if (event.key === "Enter" || event.key === " ") reveal();
        });
        return leaf(spoiler);
      }
      case "text_link": return leaf(linkNode(entity.url));
      case "url": return leaf(linkNode(segment));
      case "bot_command": {
        const command = h("span", {
          className: "command", testid: "command", role: "button", tabindex: "0",
          title: `Send ${segment}`,
        });
        const send = () => sendText(segment);
        command.addEventListener("click", send);
        command.addEventListener("keydown", (event) => {
          if (event.key === "Enter") send();
        });
        return leaf(command);
      }
      case "mention":
      case "text_mention":
      case "hashtag":
      case "cashtag":
      case "email":
      case "phone_number":
        return leaf(h("span", { className: "mention" }));
      default:
        return leaf(h("span", { "data-entity": entity.type }));
    }
  }

  /* Nest entity elements over text[start, end); entities crossing a parent's end are split. */
  function buildEntities(parent, text, start, end, entities) {
    let pending = entities.slice().sort(compareEntities);
    let position = start;
    while (pending.length) {
      const entity = pending.shift();
      if (entity.end <= position) continue;
      entity.start = Math.max(entity.start, position);
      if (entity.start > position) parent.append(text.slice(position, entity.start));
      const inside = [];
      const after = [];
      for (const other of pending) {
        if (other.start >= entity.end) {
          after.push(other);
        } else if (other.end <= entity.end) {
          inside.push(other);
        } else {
          inside.push({ ...other, end: entity.end });
          after.push({ ...other, start: entity.end });
        }
      }
      pending = after.sort(compareEntities);
      const { outer, inner } = entityNode(entity, text.slice(entity.start, entity.end));
      buildEntities(inner, text, entity.start, entity.end, inside);
      parent.append(outer);
      position = entity.end;
    }
    if (end > position) parent.append(text.slice(position, end));
  }

  function richText(text, entities, fromBot) {
    const value = typeof text === "string" ? text : "";
    const list = normalizeEntities(value, entities);
    list.push(...detectEntities(value, list, fromBot));
    const node = h("div", { className: "text", testid: "message-text" });
    buildEntities(node, value, 0, value.length, list);
    return node;
  }

  // ---------------------------------------------------------------- messages

  const SVG_NS = "http://www.w3.org/2000/svg";
  const ICONS = {
    photo: ["M4 5h16v14H4z", "M4 16l5-5 4 4 3-3 4 4", "M15.5 7.5a1.5 1.5 0 1 0 0 3a1.5 1.5 0 1 0 0-3"],
    document: ["M6 3h8l4 4v14H6z", "M14 3v4h4", "M9 12h6", "M9 16h6"],
    location: ["M12 21s-6-5.7-6-11a6 6 0 0 1 12 0c0 5.3-6 11-6 11z",
      "M12 8a2 2 0 1 0 0 4a2 2 0 1 0 0-4"],
    voice: ["M12 3a3 3 0 0 0-3 3v6a3 3 0 0 0 6 0V6a3 3 0 0 0-3-3z", "M5 11a7 7 0 0 0 14 0",
      "M12 18v3"],
    invoice: ["M6 3h12v18l-3-2-3 2-3-2-3 2z", "M9 8h6", "M9 12h6"],
    paid: ["M5 12l4 4 10-10"],
    message: ["M4 5h16v11H8l-4 4z"],
  };

  function icon(name) {
    const svg = document.createElementNS(SVG_NS, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("aria-hidden", "true");
    for (const d of ICONS[name] || ICONS.message) {
      const path = document.createElementNS(SVG_NS, "path");
      path.setAttribute("d", d);
      path.setAttribute("fill", "none");
      path.setAttribute("stroke", "currentColor");
      path.setAttribute("stroke-width", "1.7");
      path.setAttribute("stroke-linecap", "round");
      path.setAttribute("stroke-linejoin", "round");
      svg.append(path);
    }
    return svg;
  }

  function card(iconName, title, subtitle, testid) {
    return h("div", { className: "card", testid },
      h("span", { className: "card-icon" }, icon(iconName)),
      h("div", { className: "card-body" },
        h("div", { className: "card-title" }, title),
        subtitle ? h("div", { className: "card-sub" }, subtitle) : null));
  }

  function withCaption(node, message) {
    if (!message.text) return [node];
    return [node, richText(message.text, message.entities, message.from === "bot")];
  }

  function messageBody(message) {
    const fromBot = message.from === "bot";
    switch (message.kind) {
      case "text":
        return [richText(message.text, message.entities, fromBot)];
      case "photo": {
        const sizes = Array.isArray(message.photo) ? message.photo : [];
        const biggest = sizes[sizes.length - 1] || {};
        const detail = message.file_name
          || (biggest.width ? `${biggest.width}\u00D7${biggest.height}` : "");
        return withCaption(card("photo", "Photo", detail, "photo"), message);
      }
      case "document": {
        const doc = message.document || {};
        const name = doc.file_name || message.file_name || "Document";
        return withCaption(card("document", name, formatSize(doc.file_size), "document"),
          message);
      }
      case "sticker": {
        const emoji = (message.sticker && message.sticker.emoji) || "\u{1F5BC}";
        return [h("div", { className: "sticker", testid: "sticker", title: "Sticker" }, emoji)];
      }
      case "location": {
        const point = message.location || {};
        const where = `${Number(point.latitude).toFixed(5)}, ${Number(point.longitude).toFixed(5)}`;
        return [card("location", "Location", where, "location")];
      }
      case "voice": {
        const voice = message.voice || {};
        return [card("voice", "Voice message", `${voice.duration || 0} s`, "voice")];
      }
      case "invoice": {
        const invoice = message.invoice || {};
        return [h("div", { className: "invoice", testid: "invoice" },
          card("invoice", invoice.title || "Invoice", invoice.description || ""),
          h("div", { className: "price" }, formatAmount(invoice.total_amount, invoice.currency)))];
      }
      case "successful_payment": {
        const payment = message.successful_payment || {};
        return [card("paid", "Payment sent",
          formatAmount(payment.total_amount, payment.currency), "payment")];
      }
      default:
        return withCaption(card("message", message.kind || "message", ""), message);
    }
  }

  function pendingKey(messageId, data) {
    return `${messageId}\u0000${data}`;
  }

  function callbackButton(message, button) {
    const data = button.callback_data;
    const node = h("button", {
      type: "button", className: "kb-btn", testid: "inline-button",
      "data-callback-data": data, title: `callback_data: ${data}`,
    }, String(button.text));
    if (state.pendingKeys.has(pendingKey(message.message_id, data))) node.classList.add("pending");
    node.addEventListener("click", () => pressButton(message.message_id, data, String(button.text)));
    return node;
  }

  function unsupportedButton(label, why) {
    return h("button", {
      type: "button", className: "kb-btn", testid: "inline-button", disabled: true, title: why,
    }, label);
  }

  function inlineButton(message, button) {
    const label = String(button.text ?? "");
    if (typeof button.callback_data === "string") return callbackButton(message, button);
    const url = typeof button.url === "string" ? button.url
      : (button.login_url && button.login_url.url);
    if (typeof url === "string") {
      const href = safeUrl(url);
      if (!href) return unsupportedButton(label, `Not a web link: ${url}`);
      return h("a", {
        className: "kb-btn kb-link", testid: "inline-button", href, target: "_blank",
        rel: "noopener noreferrer", title: href, "data-url": href,
      }, label);
    }
    if (button.pay) {
      return h("button", {
        type: "button", className: "kb-btn", testid: "pay-button",
        onclick: () => payInvoice(message.message_id),
      }, label);
    }
    if (button.copy_text && typeof button.copy_text.text === "string") {
      const text = button.copy_text.text;
      return h("button", {
        type: "button", className: "kb-btn", testid: "inline-button",
        onclick: () => copyText(text),
      }, label);
    }
    const kind = Object.keys(button).find((key) => key !== "text") || "unknown";
    return unsupportedButton(label, `${kind} buttons are not supported in the sandbox`);
  }

  function inlineKeyboard(message) {
    const markup = message.reply_markup || {};
    let rows = Array.isArray(markup.inline_keyboard) ? markup.inline_keyboard : [];
    if (message.kind === "invoice" && rows.length === 0 && message.from === "bot") {
      const invoice = message.invoice || {};
      rows = [[{ text: `Pay ${formatAmount(invoice.total_amount, invoice.currency)}`, pay: true }]];
    }
    if (!rows.length) return null;
    const keyboard = h("div", { className: "keyboard", testid: "inline-keyboard" });
    for (const row of rows) {
      if (!Array.isArray(row) || !row.length) continue;
      keyboard.append(h("div", { className: "kb-row" },
        row.filter((button) => button && typeof button === "object")
          .map((button) => inlineButton(message, button))));
    }
    return keyboard;
  }

  function metaNode(message) {
    const title = new Date(message.date * 1000).toLocaleString();
    return h("span", { className: "meta", title },
      message.edited ? h("span", { className: "edited", testid: "edited" }, "edited") : null,
      h("time", {}, formatTime(message.date)));
  }

  function fillMessage(node, message) {
    const fromBot = message.from === "bot";
    const system = message.kind === "successful_payment";
    node.className = `msg ${fromBot ? "msg-bot" : "msg-user"}${system ? " msg-system" : ""}`;
    node.setAttribute("data-from", fromBot ? "bot" : "user");
    node.setAttribute("data-kind", message.kind);
    node.setAttribute("data-edited", message.edited ? "true" : "false");
    const body = messageBody(message);
    const bubble = h("div", { className: "bubble", testid: "bubble" }, body);
    if (message.kind === "sticker") bubble.classList.add("bare");
    const meta = metaNode(message);
    bubble.append(meta);
    const last = body[body.length - 1];
    if (last && last.classList.contains("text")) {
      last.append(h("span", { className: "meta-spacer", "aria-hidden": "true" },
        meta.textContent));
    } else {
      meta.classList.add("meta-static");
    }
    const keyboard = inlineKeyboard(message);
    node.replaceChildren(bubble, ...(keyboard ? [keyboard] : []));
  }

  function isNearBottom() {
    const list = ui.messages;
    return list.scrollHeight - list.scrollTop - list.clientHeight < 80;
  }

  function scrollToBottom() {
    ui.messages.scrollTop = ui.messages.scrollHeight;
    state.atBottom = true;
  }

  function renderMessages(messages, firstRender) {
    const seen = new Set();
    messages.forEach((message, index) => {
      const id = message.message_id;
      seen.add(id);
      const signature = JSON.stringify(message);
      let entry = state.nodes.get(id);
      if (!entry) {
        const node = h("div", { testid: "message", "data-message-id": id });
        entry = { node, signature: "" };
        state.nodes.set(id, entry);
      }
      if (entry.signature !== signature) {
        const changed = entry.signature !== "";
        entry.signature = signature;
        fillMessage(entry.node, message);
        if (changed && !firstRender) {
          entry.node.classList.add("flash");
          setTimeout(() => entry.node.classList.remove("flash"), 1000);
        }
      }
      const current = ui.messages.children[index];
      if (current !== entry.node) ui.messages.insertBefore(entry.node, current || null);
    });
    for (const [id, entry] of state.nodes) {
      if (!seen.has(id)) {
        entry.node.remove();
        state.nodes.delete(id);
      }
    }
  }

  // ---------------------------------------------------------------- reply keyboard

  function currentReplyKeyboard(messages) {
    for (let i = messages.length - 1; i >= 0; i -= 1) {
      const message = messages[i];
      const markup = message.reply_markup;
      if (message.from !== "bot" || !markup) continue;
      if (Array.isArray(markup.keyboard)) return message;
      if (markup.remove_keyboard) return null;
    }
    return null;
  }

  function renderReplyKeyboard(messages) {
    let message = currentReplyKeyboard(messages);
    if (message && message.reply_markup.one_time_keyboard
        && state.usedOneTimeKeyboard === message.message_id) {
      message = null;
    }
    const signature = message ? JSON.stringify([message.message_id, message.reply_markup]) : "";
    if (signature === state.replyKeyboardSig) return;
    state.replyKeyboardSig = signature;
    ui.replyKeyboard.replaceChildren();
    ui.replyKeyboard.hidden = !message;
    if (!message) return;
    for (const row of message.reply_markup.keyboard) {
      if (!Array.isArray(row)) continue;
      ui.replyKeyboard.append(h("div", { className: "kb-row" }, row.map((button) => {
        const spec = typeof button === "string" ? { text: button } : (button || {});
        const label = String(spec.text ?? "");
        return h("button", {
          type: "button", className: "kb-btn", testid: "reply-button",
          onclick: () => {
            if (message.reply_markup.one_time_keyboard) {
              state.usedOneTimeKeyboard = message.message_id;
              renderReplyKeyboard(state.transcript ? state.transcript.messages : []);
            }
            if (spec.request_location) sendLocation();
            else sendText(label);
          },
        }, label);
      })));
    }
  }

  // ---------------------------------------------------------------- answers from the bot

  function settlePress(queryId) {
    const pending = state.pendingPresses.get(queryId);
    if (!pending) return;
    clearTimeout(pending.timer);
    state.pendingPresses.delete(queryId);
    const count = (state.pendingKeys.get(pending.key) || 1) - 1;
    if (count > 0) state.pendingKeys.set(pending.key, count);
    else state.pendingKeys.delete(pending.key);
    markPending(pending.messageId, pending.data, count > 0);
  }

  function markPending(messageId, data, on) {
    const entry = state.nodes.get(messageId);
    if (!entry) return;
    for (const button of entry.node.querySelectorAll(".kb-btn[data-callback-data]")) {
      if (button.getAttribute("data-callback-data") === data) {
        button.classList.toggle("pending", on);
      }
    }
  }

  function handleCallbackAnswers(answers, announce) {
    for (const answer of answers.slice(state.seenAnswers)) {
      state.answeredQueries.add(answer.callback_query_id);
      settlePress(answer.callback_query_id);
      if (!announce) continue;
      if (answer.text && answer.show_alert) showAlert(answer.text);
      else if (answer.text) toast(answer.text, "info", answer.url);
      else if (answer.url) toast("The bot answered with a link", "info", answer.url);
    }
    state.seenAnswers = answers.length;
  }

  function handleCheckoutAnswers(answers) {
    for (const answer of answers.slice(state.seenCheckouts)) {
      state.checkoutAnswers.set(answer.pre_checkout_query_id, answer);
      settleCheckout(answer.pre_checkout_query_id);
    }
    state.seenCheckouts = answers.length;
  }

  function settleCheckout(queryId) {
    const pending = state.pendingCheckouts.get(queryId);
    const answer = state.checkoutAnswers.get(queryId);
    if (!pending || !answer) return;
    clearTimeout(pending.timer);
    state.pendingCheckouts.delete(queryId);
    if (!answer.ok) {
      showAlert(answer.error_message || "The bot declined the payment.");
      return;
    }
    call("POST", `users/${pending.userId}/pay`, {
      body: { invoice_message_id: pending.messageId, pre_checkout_query_id: queryId },
    }).catch(showError);
  }

  const ACTION_TEXT = {
    typing: "typing\u2026",
    upload_photo: "sending a photo\u2026",
    upload_document: "sending a file\u2026",
    choose_sticker: "choosing a sticker\u2026",
    find_location: "finding a location\u2026",
  };

  function handleChatActions(actions) {
    const last = actions.length ? actions[actions.length - 1] : null;
    const nowMs = Date.now();
    const untilMs = last ? last.ts * 1000 + TYPING_MS : 0;
    state.typingText = last ? (ACTION_TEXT[last.action] || `${last.action}\u2026`) : "";
    state.typingUntil = Math.min(untilMs, nowMs + TYPING_MS);
    clearTimeout(state.typingTimer);
    if (state.typingUntil > nowMs) {
      state.typingTimer = setTimeout(renderChatHead, state.typingUntil - nowMs + 50);
    }
    renderChatHead();
  }

  // ---------------------------------------------------------------- the transcript

  function applyTranscript(transcript, firstRender) {
    if (transcript.chat_id !== state.userId) return;
    const stick = firstRender || state.stickToBottom || state.atBottom || isNearBottom();
    state.stickToBottom = false;
    state.transcript = transcript;
    state.version = transcript.version;
    const messages = Array.isArray(transcript.messages) ? transcript.messages : [];
    renderMessages(messages, firstRender);
    if (state.messageCounts.get(transcript.chat_id) !== messages.length) {
      state.messageCounts.set(transcript.chat_id, messages.length);
      renderUsers();
    }
    ui.messages.hidden = messages.length === 0;
    ui.startBox.hidden = messages.length !== 0;
    handleCallbackAnswers(transcript.callback_answers || [], !firstRender);
    handleCheckoutAnswers(transcript.pre_checkout_answers || []);
    handleChatActions(transcript.chat_actions || []);
    renderReplyKeyboard(messages);
    state.blocked = Boolean(transcript.blocked);
    ui.blockToggle.textContent = state.blocked ? "Unblock bot" : "Block bot";
    ui.blockToggle.classList.toggle("btn-danger", !state.blocked);
    if (state.blocked) {
      setBanner("You blocked the bot: its sends fail with 403 until you unblock it or write "
        + "to it.", "info");
    } else if (state.emulatorUp !== false) {
      setBanner("");
    }
    if (stick) scrollToBottom();
  }

  async function pollTranscript(userId, serial, signal) {
    let failures = 0;
    while (serial === state.pollSerial) {
      const started = Date.now();
      const before = state.version;
      const params = {};
      if (before >= 0) {
        params.wait_version = String(before);
        params.timeout = String(LONG_POLL_SECONDS);
      }
      try {
        const transcript = await call("GET", `chats/${userId}/transcript`, { params, signal });
        if (serial !== state.pollSerial) return;
        if (failures) setBanner("");
        failures = 0;
        applyTranscript(transcript, before < 0);
        if (transcript.version === before && Date.now() - started < MIN_POLL_GAP_MS) {
          await sleep(MIN_POLL_GAP_MS);
        }
      } catch (err) {
        if (serial !== state.pollSerial) return;
        failures += 1;
        setBanner("The emulator is unreachable; retrying\u2026", "error");
        await sleep(Math.min(1000 * 2 ** failures, 10000));
      }
    }
  }

  function startPolling() {
    state.pollSerial += 1;
    if (state.pollAbort) state.pollAbort.abort();
    state.pollAbort = new AbortController();
    pollTranscript(state.userId, state.pollSerial, state.pollAbort.signal);
  }

  // ---------------------------------------------------------------- actions of the user

  async function sendPayload(payload) {
    const userId = state.userId;
    if (!userId) return false;
    const body = { ...payload };
    const lang = userLang(userId);
    if (lang) body.language_code = lang;
    state.stickToBottom = true;
    try {
      await call("POST", `users/${userId}/message`, { body });
      return true;
    } catch (err) {
      showError(err);
      return false;
    }
  }

  function sendText(text) {
    return sendPayload({ text });
  }

  function sendLocation() {
    const latitude = Number(ui.lat.value);
    const longitude = Number(ui.lon.value);
    if (ui.lat.value === "" || ui.lon.value === "" || !Number.isFinite(latitude)
        || !Number.isFinite(longitude) || Math.abs(latitude) > 90 || Math.abs(longitude) > 180) {
      toast("Latitude must be within \u00B190 and longitude within \u00B1180.", "error");
      return Promise.resolve(false);
    }
    return sendPayload({ location: { latitude, longitude } });
  }

  async function pressButton(messageId, data, label) {
    const userId = state.userId;
    const key = pendingKey(messageId, data);
    state.pendingKeys.set(key, (state.pendingKeys.get(key) || 0) + 1);
    markPending(messageId, data, true);
    let result;
    try {
      result = await call("POST", `users/${userId}/press`, {
        body: { message_id: messageId, data },
      });
    } catch (err) {
      const count = (state.pendingKeys.get(key) || 1) - 1;
      if (count > 0) state.pendingKeys.set(key, count);
      else state.pendingKeys.delete(key);
      markPending(messageId, data, count > 0);
      showError(err);
      return;
    }
    const queryId = result.callback_query_id;
    const timer = setTimeout(() => {
      if (!state.pendingPresses.has(queryId)) return;
      settlePress(queryId);
      toast(`The bot did not answer the callback query of \u201C${label}\u201D.`, "warning");
    }, CALLBACK_WAIT_MS);
    state.pendingPresses.set(queryId, { key, messageId, data, timer });
    if (state.answeredQueries.has(queryId)) settlePress(queryId);
  }

  async function payInvoice(messageId) {
    const userId = state.userId;
    let result;
    try {
      result = await call("POST", `users/${userId}/pre_checkout`, {
        body: { invoice_message_id: messageId },
      });
    } catch (err) {
      showError(err);
      return;
    }
    const queryId = result.pre_checkout_query_id;
    const timer = setTimeout(() => {
      if (!state.pendingCheckouts.delete(queryId)) return;
      toast("The bot did not answer the pre-checkout query.", "warning");
    }, CHECKOUT_WAIT_MS);
    state.pendingCheckouts.set(queryId, { userId, messageId, timer });
    settleCheckout(queryId);
  }

  async function copyText(text) {
    try {
      await navigator.clipboard.writeText(text);
      toast("Copied to the clipboard");
    } catch (err) {
      toast(`Copy: ${text}`);
    }
  }

  // ---------------------------------------------------------------- users and status

  function renderUsers() {
    const users = [...state.users.values()].sort((a, b) => a.id - b.id);
    ui.usersEmpty.hidden = users.length > 0;
    ui.userList.replaceChildren(...users.map((user) => {
      const count = state.messageCounts.get(user.id) || 0;
      const meta = [`id ${user.id}`, user.language_code || "no language",
        `${count} message${count === 1 ? "" : "s"}`].join(" \u00B7 ");
      return h("li", {},
        h("button", {
          type: "button", className: "user-item", testid: "user-item",
          "data-user-id": user.id, "aria-current": user.id === state.userId ? "true" : null,
          onclick: () => openChat(user.id),
        },
        avatar(h("span", { className: "avatar", "aria-hidden": "true" }), user.id),
        h("span", { className: "user-text" },
          h("span", { className: "user-name" }, user.first_name),
          h("span", { className: "user-meta" }, meta))));
    }));
    if (!state.newUserIdEdited && document.activeElement !== ui.newUserId) {
      let next = FIRST_USER_ID;
      while (state.users.has(next)) next += 1;
      ui.newUserId.value = String(next);
    }
  }

  function renderStatus() {
    const node = ui.botStatus;
    const bot = state.bot;
    if (state.emulatorUp === false) {
      node.setAttribute("data-state", "down");
      node.textContent = "emulator unreachable";
    } else if (!bot) {
      node.setAttribute("data-state", "unknown");
      node.textContent = "connecting\u2026";
    } else if (bot.polling) {
      node.setAttribute("data-state", "online");
      node.textContent = `@${bot.username} is polling`;
    } else {
      node.setAttribute("data-state", "offline");
      const waiting = bot.pending_updates ? ` \u00B7 ${bot.pending_updates} updates waiting` : "";
      node.textContent = `@${bot.username} is not polling${waiting}`;
    }
    renderChatHead();
  }

  function renderChatHead() {
    const userId = state.userId;
    if (!userId) return;
    ui.chatName.textContent = userName(userId);
    avatar(ui.chatAvatar, userId);
    const lang = userLang(userId);
    if (lang && ui.chatLang.value !== lang && document.activeElement !== ui.chatLang) {
      ui.chatLang.value = lang;
    }
    const typing = state.typingUntil > Date.now();
    ui.chatSub.classList.toggle("typing", typing);
    if (typing) {
      ui.chatSub.textContent = `bot is ${state.typingText}`;
      return;
    }
    const parts = [`user ${userId}`, lang || "no language"];
    if (state.bot) parts.push(state.bot.polling ? "bot online" : "bot not polling");
    ui.chatSub.textContent = parts.join(" \u00B7 ");
  }

  async function refreshStatus() {
    const known = { userId: state.userId, version: state.version };
    try {
      const [bots, users, chats] = await Promise.all([
        call("GET", "bots"), call("GET", "users"), call("GET", "chats"),
      ]);
      const list = bots.bots || [];
      state.bot = list.find((bot) => bot.id === state.botId) || list[0] || null;
      state.users = new Map((users.users || []).map((user) => [user.id, user]));
      state.messageCounts = new Map((chats.chats || []).map((chat) => [chat.chat_id,
        chat.messages]));
      state.emulatorUp = true;
      resyncIfReset(chats.chats || [], known);
    } catch (err) {
      state.emulatorUp = false;
    }
    renderStatus();
    renderUsers();
  }

  /* After an emulator reset or restart the chat's version goes back: reload the chat.
   * `known` is what the page had seen before asking, so a newer transcript is no reason. */
  function resyncIfReset(chats, known) {
    if (!known.userId || known.userId !== state.userId || known.version <= 0) return;
    const chat = chats.find((item) => item.chat_id === known.userId);
    if (!chat || chat.version < known.version) {
      resetChatState();
      startPolling();
    }
  }

  function scheduleStatus() {
    setTimeout(async () => {
      if (document.visibilityState === "visible") await refreshStatus();
      scheduleStatus();
    }, STATUS_INTERVAL_MS);
  }

  function resetChatState() {
    for (const pending of state.pendingPresses.values()) clearTimeout(pending.timer);
    for (const pending of state.pendingCheckouts.values()) clearTimeout(pending.timer);
    clearTimeout(state.typingTimer);
    Object.assign(state, {
      transcript: null, version: -1, nodes: new Map(), seenAnswers: 0, seenCheckouts: 0,
      answeredQueries: new Set(), checkoutAnswers: new Map(), pendingPresses: new Map(),
      pendingKeys: new Map(), pendingCheckouts: new Map(), usedOneTimeKeyboard: null,
      replyKeyboardSig: "", typingUntil: 0, typingText: "", blocked: false,
    });
    ui.messages.replaceChildren();
    ui.replyKeyboard.replaceChildren();
    ui.replyKeyboard.hidden = true;
    ui.messages.hidden = true;
    ui.startBox.hidden = true;
    setBanner("");
  }

  function openChat(userId) {
    if (state.userId !== userId) {
      state.userId = userId;
      resetChatState();
      startPolling();
    }
    try {
      window.localStorage.setItem(STORAGE_KEY, String(userId));
    } catch (err) {
      /* storage may be disabled */
    }
    window.history.replaceState(null, "", `#user=${userId}`);
    ui.chatEmpty.hidden = true;
    ui.chatHead.hidden = false;
    ui.composer.hidden = false;
    ui.app.setAttribute("data-view", "chat");
    renderChatHead();
    renderUsers();
    if (window.matchMedia("(min-width: 761px)").matches) ui.input.focus();
  }

  async function createUser(event) {
    event.preventDefault();
    const userId = Number(ui.newUserId.value);
    if (!Number.isSafeInteger(userId) || userId <= 0) {
      toast("The user id must be a positive integer.", "error");
      return;
    }
    const body = {
      user_id: userId,
      first_name: ui.newUserName.value.trim() || `User ${userId}`,
      language_code: ui.newUserLang.value,
    };
    try {
      const result = await call("POST", "users", { body });
      state.users.set(result.user.id, result.user);
    } catch (err) {
      showError(err);
      return;
    }
    ui.newUserName.value = "";
    state.newUserIdEdited = false;
    openChat(userId);
    refreshStatus();
  }

  async function changeLanguage() {
    const userId = state.userId;
    if (!userId) return;
    try {
      const result = await call("POST", "users", {
        body: { user_id: userId, language_code: ui.chatLang.value },
      });
      state.users.set(result.user.id, result.user);
      renderChatHead();
      renderUsers();
    } catch (err) {
      showError(err);
    }
  }

  async function toggleBlock() {
    const userId = state.userId;
    if (!userId) return;
    try {
      await call("POST", `users/${userId}/${state.blocked ? "unblock" : "block"}`, { body: {} });
    } catch (err) {
      showError(err);
    }
  }

  function autoGrow() {
    ui.input.style.height = "auto";
    ui.input.style.height = `${Math.min(ui.input.scrollHeight + 2, 160)}px`;
  }

  async function submitText(event) {
    event.preventDefault();
    const text = ui.input.value;
    if (!text.trim()) return;
    ui.input.value = "";
    autoGrow();
    if (!(await sendText(text)) && !ui.input.value) {
      ui.input.value = text;
      autoGrow();
    }
  }

  function restoreUser() {
    const fromHash = /^#user=(\d+)$/.exec(window.location.hash);
    let stored = null;
    try {
      stored = window.localStorage.getItem(STORAGE_KEY);
    } catch (err) {
      stored = null;
    }
    const userId = Number(fromHash ? fromHash[1] : stored);
    if (userId > 0 && state.users.has(userId)) openChat(userId);
  }

  // ---------------------------------------------------------------- wiring

  ui.messages.addEventListener("scroll", () => { state.atBottom = isNearBottom(); },
    { passive: true });
  new ResizeObserver(() => {
    if (state.atBottom) scrollToBottom();
  }).observe(ui.messages);
  ui.newUserForm.addEventListener("submit", createUser);
  ui.newUserId.addEventListener("input", () => { state.newUserIdEdited = true; });
  ui.composer.addEventListener("submit", submitText);
  ui.input.addEventListener("input", autoGrow);
  ui.input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      ui.composer.requestSubmit();
    }
  });
  ui.startButton.addEventListener("click", () => sendText("/start"));
  ui.attachToggle.addEventListener("click", () => {
    ui.attachPanel.hidden = !ui.attachPanel.hidden;
    ui.attachToggle.setAttribute("aria-expanded", String(!ui.attachPanel.hidden));
  });
  ui.sendLocation.addEventListener("click", sendLocation);
  ui.sendSticker.addEventListener("click", () => sendPayload({ sticker: true }));
  ui.sendPhoto.addEventListener("click", () => sendPayload({ photo: true }));
  ui.sendVoice.addEventListener("click", () => sendPayload({ voice: true }));
  ui.chatLang.addEventListener("change", changeLanguage);
  ui.blockToggle.addEventListener("click", toggleBlock);
  ui.back.addEventListener("click", () => ui.app.setAttribute("data-view", "list"));
  ui.alertOk.addEventListener("click", closeAlert);
  ui.alert.addEventListener("click", (event) => {
    if (event.target === ui.alert) closeAlert();
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !ui.alert.hidden) closeAlert();
  });
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") refreshStatus();
  });

  refreshStatus().then(() => {
    restoreUser();
    scheduleStatus();
  });
})();
