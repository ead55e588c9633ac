// The chat page: joins a `chatRoom` actor (demo_project/chat/actors.py) with the
// official RivetKit client, served same-origin as "rivetkit/client" (see the
// import map in templates/chat/room.html).
import { createClient } from "rivetkit/client";

const TYPING_IDLE_MS = 2500; // we stop "typing" after this much quiet
const TYPING_STALE_MS = 6000; // someone else's indicator disappears if not refreshed

const $ = (id) => document.getElementById(id);
const ui = {
  status: $("status"),
  error: $("error"),
  joinForm: $("join-form"),
  name: $("name"),
  room: $("room"),
  leave: $("leave"),
  roomView: $("room-view"),
  roomTitle: $("room-title"),
  messages: $("messages"),
  typing: $("typing"),
  sendForm: $("send-form"),
  message: $("message"),
  members: $("members"),
};

// devtools defaults to on for localhost and would load a script this server does not have.
const client = createClient({ endpoint: `${window.location.origin}/api/rivet`, devtools: false });

const STATUS_TEXT = {
  idle: "Not connected",
  connecting: "Connecting…",
  connected: "Connected",
  disconnected: "Reconnecting…",
};

/** The room we are in: its connection and what is on screen. */
let session = null;

function isCurrent(s) {
  return session === s;
}

function setStatus(status) {
  ui.status.dataset.status = status;
  ui.status.textContent = STATUS_TEXT[status] ?? status;
}

function showError(message) {
  ui.error.textContent = message;
  ui.error.hidden = !message;
}

function describe(error) {
  return error?.message ?? String(error);
}

function formatTime(ts) {
  return new Date(ts).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function addMessage(s, message) {
  if (s.seen.has(message.id)) return; // history and live events overlap on (re)connect
  s.seen.add(message.id);
  const item = document.createElement("li");
  item.className = message.name === s.name ? "message mine" : "message";
  item.dataset.testid = "message";
  item.dataset.id = message.id;
  const author = document.createElement("span");
  author.className = "author";
  author.textContent = message.name;
  const time = document.createElement("time");
  time.dateTime = new Date(message.ts).toISOString();
  time.textContent = formatTime(message.ts);
  const text = document.createElement("p");
  text.className = "text";
  text.dataset.testid = "message-text";
  text.textContent = message.text;
  item.append(author, " ", time, text);
  const atBottom = ui.messages.scrollHeight - ui.messages.scrollTop - ui.messages.clientHeight < 40;
  ui.messages.append(item);
  if (atBottom || message.name === s.name) item.scrollIntoView({ block: "end" });
}

function renderMembers(s, names) {
  ui.members.replaceChildren(
    ...names.map((name) => {
      const item = document.createElement("li");
      item.dataset.testid = "member";
      item.textContent = name === s.name ? `${name} (you)` : name;
      return item;
    }),
  );
}

function renderTyping(s) {
  const names = [...s.typers.keys()];
  ui.typing.textContent =
    names.length === 0 ? "" : names.length === 1 ? `${names[0]} is typing…` : `${names.join(", ")} are typing…`;
}

function setTyper(s, name, typing) {
  if (name === s.name) return;
  clearTimeout(s.typers.get(name));
  if (typing) {
    s.typers.set(name, setTimeout(() => setTyper(s, name, false), TYPING_STALE_MS));
  } else {
    s.typers.delete(name);
  }
  renderTyping(s);
}

/** Tell the room whether we are typing; "stopped" follows a short pause by itself. */
function noteTyping(s, typing) {
  clearTimeout(s.typingTimer);
  if (typing) s.typingTimer = setTimeout(() => noteTyping(s, false), TYPING_IDLE_MS);
  if (typing === s.typingSent) return;
  s.typingSent = typing;
  s.conn.typing(typing).catch(() => {}); // best effort: a lost indicator is harmless
}

async function join(name, room) {
  await leave();
  showError("");
  const s = {
    name,
    room,
    conn: null,
    attempt: 0, // reconnections since the last successful one
    retryTimer: null,
    seen: new Set(), // message ids on screen
    typers: new Map(), // name -> timer hiding a stale indicator
    typingTimer: null,
    typingSent: false,
  };
  session = s;
  ui.roomTitle.textContent = `# ${room}`;
  ui.messages.replaceChildren();
  ui.members.replaceChildren();
  ui.typing.textContent = "";
  ui.roomView.hidden = false;
  ui.leave.hidden = false;
  window.history.replaceState(null, "", `/chat/${encodeURIComponent(room)}/`);
  ui.message.focus();
  connect(s);
}

/** Open a connection for the session; the room stays on screen across reconnections. */
function connect(s) {
  const conn = client.chatRoom.getOrCreate([s.room], { params: { name: s.name } }).connect();
  s.conn = conn;
  s.typingSent = false;
  let lastError = null;
  const live = () => isCurrent(s) && s.conn === conn;

  conn.on("message", (message) => {
    if (!live()) return;
    addMessage(s, message);
    setTyper(s, message.name, false);
  });
  conn.on("presence", (names) => live() && renderMembers(s, names));
  conn.on("typing", ({ name, typing }) => live() && setTyper(s, name, typing));
  conn.onError((error) => {
    lastError = error;
    if (live()) showError(describe(error));
  });
  conn.onStatusChange((status) => {
    if (!live()) return;
    if (status !== "idle") {
      setStatus(status);
      return;
    }
    // "idle": the client stopped trying. Whatever the server said (say, a bad
    // name) is final; when the server could not be reached (group "client": it
    // restarted, the network dropped), the client does not retry by itself, so we do.
    if (lastError?.group !== "client") {
      leave();
      return;
    }
    conn.dispose().catch(() => {});
    setStatus("disconnected");
    const delay = Math.min(500 * 2 ** s.attempt++, 10_000);
    s.retryTimer = setTimeout(() => isCurrent(s) && connect(s), delay);
  });
  conn.onOpen(async () => {
    if (s.attempt > 0 || lastError) showError(""); // back after a failure: its message is stale
    s.attempt = 0;
    // One tick later the client has re-sent its event subscriptions, so nothing
    // that happens after this snapshot is missed.
    await null;
    try {
      const [messages, members] = await Promise.all([conn.history(), conn.members()]);
      if (!live()) return;
      for (const message of messages) addMessage(s, message);
      renderMembers(s, members);
    } catch (error) {
      if (live()) showError(describe(error));
    }
  });
}

async function leave() {
  const s = session;
  if (!s) return;
  session = null;
  clearTimeout(s.retryTimer);
  clearTimeout(s.typingTimer);
  for (const timer of s.typers.values()) clearTimeout(timer);
  ui.roomView.hidden = true;
  ui.leave.hidden = true;
  setStatus("idle");
  await s.conn.dispose().catch(() => {});
}

ui.joinForm.addEventListener("submit", (event) => {
  event.preventDefault();
  join(ui.name.value.trim(), ui.room.value.trim());
});

ui.leave.addEventListener("click", () => {
  showError("");
  leave();
});

ui.message.addEventListener("input", () => {
  if (session) noteTyping(session, ui.message.value.trim() !== "");
});

ui.sendForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const s = session;
  const text = ui.message.value.trim();
  if (!s || !text) return;
  ui.message.value = "";
  noteTyping(s, false);
  try {
    addMessage(s, await s.conn.sendMessage(text));
    showError("");
  } catch (error) {
    if (!isCurrent(s)) return;
    showError(describe(error));
    if (!ui.message.value) ui.message.value = text;
  }
});

document.documentElement.dataset.ready = "true"; // the module loaded: the page is usable
