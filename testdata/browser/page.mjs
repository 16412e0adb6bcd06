// page.mjs: one chromium page (Debian's /usr/bin/chromium through
// playwright-core, never a downloaded browser) driven step by step by a Go
// test (TestInspectorStates, TestInspectorServeToken).
//
//   node page.mjs <url> <screenshot dir>
//
// Opens the page, prints {"ev":"ready"}, then answers each command on stdin
// (one JSON object a line) with one report, in order:
//   {"op":"wait","expr":"<js>","timeout":ms}  waits until the expression is
//        truthy in the page; {"ev":"ok","value":<its value>}
//   {"op":"eval","expr":"<js>"}     {"ev":"ok","value":<its value>}
//   {"op":"click","sel":"<css>"}    {"ev":"ok"}
//   {"op":"fill","sel":"<css>","text":"…"}  {"ev":"ok"}
//   {"op":"offline","on":true}      makes /inspector/api/* and /readyz fail
//        (the server unreachable, as the page sees it); {"ev":"ok"}
//   {"op":"shot","name":"x.png"}    a screenshot into the directory;
//        {"ev":"ok","value":"<path>"}
//   {"op":"exit"}
// A failure prints {"ev":"fatal","message":"…"} with the page's console and
// exits 1.
import { chromium } from "playwright-core";
import { createInterface } from "node:readline";
import { join } from "node:path";

const [url, dir] = process.argv.slice(2);
const out = (o) => process.stdout.write(JSON.stringify(o) + "\n");
const logs = [];
const fail = (message) => { out({ ev: "fatal", message: `${message}\n${logs.slice(-30).join("\n")}` }); process.exit(1); };

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage"],
}).catch(fail);
// bypassCSP: the commands' expressions are evaluated as strings, which the
// page's own policy (no eval) would refuse; the page is unchanged.
const context = await browser.newContext({ viewport: { width: 1440, height: 900 }, deviceScaleFactor: 1, bypassCSP: true });
const page = await context.newPage();
page.on("console", (m) => logs.push(`${m.type()}: ${m.text()}`));
page.on("pageerror", (e) => logs.push(`pageerror: ${e.message}`));
await page.goto(url).catch(fail);
await page.waitForFunction(() => document.getElementById("empty-title").textContent !== "Loading…", null, { timeout: 15000 }).catch(fail);
out({ ev: "ready" });

const offline = (route) => route.abort("connectionrefused");
const rl = createInterface({ input: process.stdin });
for await (const line of rl) {
  if (!line.trim()) continue;
  const cmd = JSON.parse(line);
  try {
    switch (cmd.op) {
      case "wait": {
        const h = await page.waitForFunction(cmd.expr, null, { timeout: cmd.timeout || 20000 });
        out({ ev: "ok", value: await h.jsonValue() });
        break;
      }
      case "eval":
        out({ ev: "ok", value: await page.evaluate(cmd.expr) });
        break;
      case "click":
        await page.click(cmd.sel, { timeout: 10000 });
        out({ ev: "ok" });
        break;
      case "fill":
        await page.fill(cmd.sel, cmd.text, { timeout: 10000 });
        out({ ev: "ok" });
        break;
      case "offline":
        if (cmd.on) {
          await page.route("**/inspector/api/**", offline);
          await page.route("**/readyz", offline);
        } else {
          await page.unroute("**/inspector/api/**", offline);
          await page.unroute("**/readyz", offline);
        }
        out({ ev: "ok" });
        break;
      case "shot": {
        const path = join(dir, cmd.name);
        await page.screenshot({ path });
        out({ ev: "ok", value: path });
        break;
      }
      case "exit":
        await browser.close();
        process.exit(0);
    }
  } catch (e) {
    fail(`${cmd.op} ${cmd.expr || cmd.sel || cmd.name || ""}: ${e.message}`);
  }
}
await browser.close();
process.exit(0);
