// listeners.js: Koordi's socket wiring (SocketContext.tsx + useSocketEvents.ts)
// in a plain page, for TestFrontendListenersAcrossRestart. No React here:
// mount() below is a stand-in for the two things of React the listener
// pattern depends on, state and effects. A state change schedules a
// re-render on a MessageChannel task, as React's scheduler does in a browser
// for an update made outside a React event handler (a socket callback), and
// the effects whose dependencies changed are cleaned up and run again in that
// re-render. React itself is slower (its passive effects may take a second
// task), so whatever the old pattern loses here, it loses in Koordi too.
//
// The page's query string: server (the gateway's URL), token (a JWT),
// pattern: "new" (the patch: listeners bound once per socket) or "old"
// (Koordi's current hook: bound while isConnected, removed on disconnect),
// busy (milliseconds, see keepBusyOnReopen; 0: never).
// Everything is reported through window.report (the driver's binding), in
// order, with a sequence number (seq) and the page's clock (t, ms):
//   {ev:"connect", recovered, transport}   {ev:"disconnect", reason}
//   {ev:"connect_error", message}
//   {ev:"event", event, args: [payload, offset]}  what a listener received
//   {ev:"refetch", reason}  where the patched hook invalidates every query
//   {ev:"bound"} / {ev:"unbound"}  the event listeners' (un)binding
//   {ev:"busy"}  keepBusyOnReopen starts keeping the page busy
"use strict";

const params = new URLSearchParams(location.search);
const SERVER = params.get("server");
const TOKEN = params.get("token");
const PATTERN = params.get("pattern");

let seq = 0;
const report = (r) => window.report({ seq: ++seq, t: Math.round(performance.now()), ...r });

// The event names useSocketEvents listens to (the patched list).
const SOCKET_EVENTS = [
  "event:assigned", "event:unassigned", "event:created", "event:updated", "event:deleted",
  "conflict:resolved", "calendar:synced", "calendar:sync_failed", "calendar:updated", "calendar:deleted",
  "member:added", "member:removed", "invitation:received", "sync:reset",
];

// mount runs component(hooks) now and again after every state change.
function mount(component) {
  const slots = [];
  let cursor = 0;
  let queued = false;
  let pending = [];
  const channel = new MessageChannel();
  channel.port1.onmessage = () => {
    queued = false;
    render();
  };
  const hooks = {
    useState(initial) {
      const i = cursor++;
      if (!(i in slots)) slots[i] = { value: initial };
      const slot = slots[i];
      const set = (v) => {
        if (Object.is(slot.value, v)) return;
        slot.value = v;
        if (!queued) {
          queued = true;
          channel.port2.postMessage(null);
        }
      };
      return [slot.value, set];
    },
    useEffect(effect, deps) {
      const i = cursor++;
      const prev = slots[i];
      if (prev && deps.every((d, k) => Object.is(d, prev.deps[k]))) return;
      pending.push(() => {
        if (prev && typeof prev.cleanup === "function") prev.cleanup();
        slots[i] = { deps, cleanup: effect() };
      });
    },
  };
  function render() {
    cursor = 0;
    pending = [];
    component(hooks);
    for (const run of pending) run();
  }
  render();
}

// SocketProvider (SocketContext.tsx, patched): one socket per token, with
// Koordi's options and reconnection that never gives up.
function useSocketProvider({ useState, useEffect }) {
  const [socket, setSocket] = useState(null);
  const [isConnected, setIsConnected] = useState(false);
  useEffect(() => {
    const newSocket = io(SERVER, {
      auth: { token: TOKEN },
      transports: ["websocket", "polling"],
      reconnection: true,
      reconnectionDelay: 1000,
      reconnectionDelayMax: 5000,
      reconnectionAttempts: Infinity,
      path: "/socket.io",
    });
    newSocket.on("connect", () => {
      report({ ev: "connect", recovered: newSocket.recovered, transport: newSocket.io.engine.transport.name });
      setIsConnected(true);
    });
    newSocket.on("disconnect", (reason) => {
      report({ ev: "disconnect", reason });
      setIsConnected(false);
    });
    newSocket.on("connect_error", (error) => {
      report({ ev: "connect_error", message: error.message });
      setIsConnected(false);
    });
    keepBusyOnReopen(newSocket);
    setSocket(newSocket);
    return () => newSocket.disconnect();
  }, [TOKEN]);
  return { socket, isConnected };
}

// Test instrumentation, not Koordi's: with busy=<ms>, the page's main
// thread is held for that long each time the engine connection opens again
// after a loss (the client's CONNECT has just been sent), so that the
// server's CONNECT reply and the replay behind it are all in when the page
// gets to them, as for a page busy rendering or a tab a phone is waking up.
// Without it, how much of the replay is still on its way when the connect is
// dispatched is down to timing. The thread is held by a synchronous request
// to the test's page server (/wait), which answers after busy ms: blocked,
// not spinning, so the pages leave the machine's cores to serve.
function keepBusyOnReopen(socket) {
  const busy = Number(params.get("busy") || 0);
  let opens = 0;
  if (busy > 0) {
    socket.io.on("open", () => {
      if (++opens === 1) return;
      report({ ev: "busy" });
      const xhr = new XMLHttpRequest();
      xhr.open("GET", `wait?ms=${busy}`, false);
      xhr.send();
    });
  }
}

// The listener each handler stands for: Koordi's handlers take the payload
// and ignore the offset socket.io-client passes last; this one records both.
const listenerFor = (event) => (...args) => report({ ev: "event", event, args });

// useSocketEvents as patched: bound once per socket, across reconnects.
function useSocketEventsNew({ useEffect }, socket) {
  useEffect(() => {
    if (!socket) return;
    let hasConnected = socket.connected;
    const onConnect = () => {
      if (hasConnected && !socket.recovered) report({ ev: "refetch", reason: "not recovered" });
      hasConnected = true;
    };
    const listeners = SOCKET_EVENTS.map((event) => {
      const record = listenerFor(event);
      const listener = event === "sync:reset"
        ? (...args) => { record(...args); report({ ev: "refetch", reason: "sync:reset" }); }
        : record;
      return [event, listener];
    });
    socket.on("connect", onConnect);
    for (const [event, listener] of listeners) socket.on(event, listener);
    report({ ev: "bound" });
    return () => {
      socket.off("connect", onConnect);
      for (const [event, listener] of listeners) socket.off(event, listener);
      report({ ev: "unbound" });
    };
  }, [socket]);
}

// useSocketEvents as Koordi has it: bound while isConnected, every listener
// of those names removed when it turns false.
function useSocketEventsOld({ useEffect }, socket, isConnected) {
  useEffect(() => {
    if (!socket || !isConnected) return;
    for (const event of SOCKET_EVENTS) socket.on(event, listenerFor(event));
    report({ ev: "bound" });
    return () => {
      for (const event of SOCKET_EVENTS) socket.off(event);
      report({ ev: "unbound" });
    };
  }, [socket, isConnected]);
}

// Layout renders inside SocketProvider and calls useSocketEvents.
mount((hooks) => {
  const { socket, isConnected } = useSocketProvider(hooks);
  if (PATTERN === "new") useSocketEventsNew(hooks, socket);
  else useSocketEventsOld(hooks, socket, isConnected);
});
