// browser.mjs: drives listeners.html in Debian's chromium (playwright-core,
// no downloaded browser) for TestFrontendListenersAcrossRestart.
//
//   node koordi-frontend/browser.mjs <page url> <gateway url>
//
// The test serves the page (listeners.html, listeners.js and
// socket.io-client's browser bundle) on a loopback address of its own, a
// cross-origin one as Koordi's front end is to its socket server. Prints
// {"ev":"ready"}, then reads commands on stdin, one JSON object per line:
//   {"op":"open","id":"new","pattern":"new"|"old","token":"…","busy":0}  opens a page;
//        everything it reports is printed with "id" added (see listeners.js)
//   {"op":"exit"}
// Any failure prints {"ev":"fatal","message":"…"} and exits 1.
import { chromium } from "playwright-core";
import { createInterface } from "node:readline";

const [pageURL, server] = process.argv.slice(2);
const out = (o) => process.stdout.write(JSON.stringify(o) + "\n");
const fail = (message) => { out({ ev: "fatal", message: String(message) }); process.exit(1); };

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  // Playwright gives every launch a fresh temporary profile (--user-data-dir).
  args: ["--no-sandbox", "--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage"],
}).catch(fail);
out({ ev: "ready" });

async function open(cmd) {
  // A context (and so a renderer process) per page: one page kept busy
  // must not hold up another's main thread.
  const context = await browser.newContext();
  const page = await context.newPage();
  // The page's console goes to stderr, which the test shows when it fails.
  page.on("console", (m) => process.stderr.write(`${cmd.id}: ${m.type()}: ${m.text()}\n`));
  page.on("websocket", (ws) => ws.on("socketerror", (e) => process.stderr.write(`${cmd.id}: websocket ${ws.url()}: ${e}\n`)));
  page.on("pageerror", (e) => fail(`${cmd.id}: pageerror: ${e.message}`));
  // Reports reach Node in the order the page made them; seq says so.
  await page.exposeFunction("report", (r) => out({ id: cmd.id, ...r }));
  const q = new URLSearchParams({ server, token: cmd.token, pattern: cmd.pattern, busy: String(cmd.busy || 0) });
  await page.goto(`${pageURL}?${q}`);
}

const rl = createInterface({ input: process.stdin });
for await (const line of rl) {
  if (!line.trim()) continue;
  const cmd = JSON.parse(line);
  try {
    if (cmd.op === "open") await open(cmd);
    else if (cmd.op === "exit") break;
  } catch (e) {
    fail(`${cmd.op}: ${e.message}`);
  }
}
await browser.close();
process.exit(0);
