// inspector.mjs: drives the inspector page in Debian's chromium (playwright-core,
// no downloaded browser) for TestInspectorBrowser.
//
//   node inspector.mjs <base url> <screenshot path>
//
// Opens one page per demo user in MEMBERS and NONMEMBERS (?user=<name>), waits
// until each is connected, prints {"ev":"ready"}, then reads commands on stdin,
// one JSON object per line:
//   {"op":"expect","event":"event:assigned","event_id":"…"}  every member page must
//        list that event (same offset on all); every non-member page must list no
//        event at all; answers {"ev":"expected","offset":"…"}
//   {"op":"screenshot","user":"alex"}   waits for the stats to refresh, writes the
//        screenshot, answers {"ev":"screenshot","sockets":"…"}
//   {"op":"exit"}
// Any failure prints {"ev":"fatal","message":"…"} and exits 1.
import { chromium } from "playwright-core";
import { createInterface } from "node:readline";

const [base, shot] = process.argv.slice(2);
const MEMBERS = ["alex", "sam"];
const NONMEMBERS = ["jordan"];
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

const pages = {};
const logs = [];
try {
  const context = await browser.newContext({ viewport: { width: 1440, height: 900 }, deviceScaleFactor: 1 });
  for (const user of [...MEMBERS, ...NONMEMBERS]) {
    const page = await context.newPage();
    page.on("console", (m) => logs.push(`${user}: ${m.type()}: ${m.text()}`));
    page.on("pageerror", (e) => logs.push(`${user}: pageerror: ${e.message}`));
    await page.goto(`${base}/?user=${user}`);
    await page.waitForSelector('#state[data-state="connected"]', { timeout: 30000 });
    pages[user] = page;
  }
} catch (e) {
  fail(`${e.message}\n${logs.join("\n")}`);
}
out({ ev: "ready" });

const realEvents = (page) => page.$$eval("#events li.ev:not(.system)", (lis) => lis.map((li) => ({
  event: li.dataset.event, offset: li.dataset.offset, room: li.dataset.room, text: li.querySelector(".payload")?.textContent || "",
})));

async function expect(cmd) {
  const offsets = [];
  for (const user of MEMBERS) {
    const sel = `#events li.ev[data-event="${cmd.event}"]`;
    try {
      await pages[user].waitForFunction(([sel, id]) => [...document.querySelectorAll(sel)].some((li) => li.textContent.includes(id)),
        [sel, cmd.event_id], { timeout: 20000 });
    } catch {
      fail(`${user}: no ${cmd.event} for ${cmd.event_id}; page lists ${JSON.stringify(await realEvents(pages[user]))}\n${logs.join("\n")}`);
    }
    const evs = (await realEvents(pages[user])).filter((e) => e.event === cmd.event && e.text.includes(cmd.event_id));
    if (evs.length !== 1) fail(`${user}: ${evs.length} copies of ${cmd.event} ${cmd.event_id}`);
    offsets.push(evs[0].offset);
  }
  if (new Set(offsets).size !== 1 || !/^[0-9A-F]{16}-[0-9A-F]{8}$/.test(offsets[0])) fail(`offsets differ or malformed: ${offsets}`);
  // The members have it; give a wrongly delivered copy time to arrive too.
  await new Promise((r) => setTimeout(r, 1500));
  for (const user of NONMEMBERS) {
    const evs = await realEvents(pages[user]);
    if (evs.length !== 0) fail(`${user} (not a member) got ${JSON.stringify(evs)}`);
    const state = await pages[user].$eval("#state", (n) => n.dataset.state);
    if (state !== "connected") fail(`${user}: state ${state}, want connected`);
  }
  out({ ev: "expected", offset: offsets[0] });
}

async function screenshot(cmd) {
  const page = pages[cmd.user];
  await page.waitForFunction(() => document.getElementById("st-sockets").textContent !== "–", null, { timeout: 10000 });
  await new Promise((r) => setTimeout(r, 2200)); // two stats polls: rates and sparkline
  await page.screenshot({ path: shot });
  out({ ev: "screenshot", sockets: await page.$eval("#st-sockets", (n) => n.textContent) });
}

const rl = createInterface({ input: process.stdin });
for await (const line of rl) {
  if (!line.trim()) continue;
  const cmd = JSON.parse(line);
  try {
    if (cmd.op === "expect") await expect(cmd);
    else if (cmd.op === "screenshot") await screenshot(cmd);
    else if (cmd.op === "exit") break;
  } catch (e) {
    fail(`${cmd.op}: ${e.message}\n${logs.join("\n")}`);
  }
}
await browser.close();
process.exit(0);
