// Bad-input paths of the VS Code extension in code-server, for tests/e2e/test_vscode.py: with
// coda.serverPath pointing nowhere, or at a program that exits at once, wait for the extension's
// error notification and the status bar's "CoDA: error", and record every CoDA notification.
// With CODA_MODE=restart the server runs, then dies: record the status bar until it is ready again.
//   node tests/e2e/vscode_bad_input.js URL RESULT_JSON     env: CODA_EXPECT (regexp of the message)
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const { chromium } = require('playwright-core');

const [url, resultPath] = process.argv.slice(2);
const result = { events: [] };
const t0 = Date.now();
const log = (msg) => result.events.push(`[${String(Date.now() - t0).padStart(6)} ms] ${msg}`);

// the notification center lists every notification once (a toast raised while the workbench
// starts can be shown silently, so toasts alone are not a reliable place to look)
const MESSAGE = '.notifications-center .notification-list-item-message';

async function messages(page) {
  return (await page.locator(MESSAGE).allTextContents()).filter((t) => t.includes('CoDA'));
}

/** Every distinct "CoDA: ..." status bar text until the server was ready, stopped, and is ready again. */
async function watchRestart(page) {
  result.statuses = [];
  const deadline = Date.now() + 150000;
  let readyTimes = 0;
  while (Date.now() < deadline && readyTimes < 2) {
    const text = (await page.locator('.statusbar-item:has-text("CoDA")').first().textContent({ timeout: 5000 })
      .catch(() => '')).trim();
    if (text && text !== result.statuses.at(-1)) {
      result.statuses.push(text);
      log(`status ${text}`);
      if (text.endsWith('CoDA: ready')) readyTimes += 1;
    }
    await page.waitForTimeout(100);
  }
  result.messages = await messages(page);
  if (readyTimes < 2) throw new Error(`not ready again after the crash: ${JSON.stringify(result.statuses)}`);
}

async function main() {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'chr-'));
  let ctx;
  try {
    ctx = await chromium.launchPersistentContext(profile, {
      executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true,
      viewport: { width: 1280, height: 720 },
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
        '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'],
    });
    const page = ctx.pages()[0] || await ctx.newPage();
    await page.goto(url);
    await page.locator('.monaco-workbench').waitFor({ timeout: 60000 });
    log('workbench');
    if (process.env.CODA_MODE === 'restart') {
      await watchRestart(page);
      return;
    }
    await page.locator('.statusbar-item:has-text("CoDA: error")').first().waitFor({ timeout: 90000 });
    await page.keyboard.press('Control+Shift+P');
    await page.locator('.quick-input-widget input').waitFor({ timeout: 10000 });
    await page.keyboard.type('Notifications: Show Notifications');
    await page.locator('.quick-input-list .monaco-list-row:has-text("Show Notifications")').first().waitFor({ timeout: 10000 });
    await page.keyboard.press('Enter');
    await page.waitForFunction(([sel, src]) => Array.from(document.querySelectorAll(sel))
      .some((e) => new RegExp(src).test(e.textContent)), [MESSAGE, process.env.CODA_EXPECT], { polling: 100, timeout: 15000 });
    result.status = 'error';
    result.messages = await messages(page);
    log('error notification');
  } catch (err) {
    result.error = String(err && err.stack || err);
    const page = ctx && ctx.pages()[0];
    if (page) {
      result.all_messages = await page.locator('.notification-list-item-message').allTextContents().catch(() => []);
      await page.screenshot({ path: resultPath + '.png' }).catch(() => {});
    }
  } finally {
    fs.writeFileSync(resultPath, JSON.stringify(result, null, 1));
    if (ctx) await ctx.close();
  }
}

main().then(() => process.exit(result.error ? 1 : 0));
