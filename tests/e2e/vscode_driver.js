// Drives code-server (a real VS Code) in Debian's Chromium with playwright-core, for tests/e2e/test_vscode.py.
//
//   node tests/e2e/vscode_driver.js URL RESULT_JSON SCREENSHOT_PNG
// env: CODA_FILE (file name in the workspace), CODA_PATH (its full path, read back after each save), CODA_LINE (1-based line to complete at the end of),
//      CODA_TYPE (text typed there), CODA_FILL_LINE (1-based line selected for Fill Selection),
//      CHROMIUM (browser binary). It only records what the user would see; Python asserts.
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const { chromium } = require('playwright-core');

const [url, resultPath, shotPath] = process.argv.slice(2);
const result = { events: [], ghosts: [], statuses: [] };
const t0 = Date.now();
const log = (msg) => result.events.push(`[${String(Date.now() - t0).padStart(6)} ms] ${msg}`);
const save = () => fs.writeFileSync(resultPath, JSON.stringify(result, null, 1));

const STATUS = '.statusbar-item:has-text("CoDA:")';
// the Fill Selection request shows its own window-progress item, also "CoDA: ...", while it is pending
const FILL_PROGRESS = 'CoDA: filling selection';
const GHOST = '.monaco-editor .ghost-text-decoration, .monaco-editor .ghost-text';

async function statusText(page) {
  const item = page.locator(STATUS).filter({ hasNotText: FILL_PROGRESS }).first();
  return (await item.textContent({ timeout: 5000 }).catch(() => '')).trim();
}

async function waitStatus(page, word, timeout) {
  await page.locator(`.statusbar-item:has-text("CoDA: ${word}")`).first().waitFor({ timeout });
  result.statuses.push(await statusText(page));
}

async function palette(page, command) {
  await page.keyboard.press('Control+Shift+P');
  await page.locator('.quick-input-widget input').waitFor({ timeout: 10000 });
  await page.keyboard.type(command);
  await page.locator(`.quick-input-list .monaco-list-row:has-text("${command.replace(/^>/, '').trim()}")`).first()
    .waitFor({ timeout: 10000 });
  await page.keyboard.press('Enter');
}

async function gotoLine(page, line) {
  await page.keyboard.press('Control+G');
  await page.locator('.quick-input-widget input').waitFor({ timeout: 10000 });
  await page.keyboard.type(String(line));
  await page.keyboard.press('Enter');
}

async function ghostText(page) {
  return page.evaluate((sel) => Array.from(document.querySelectorAll(sel)).map((e) => e.textContent).join('\n'), GHOST);
}

async function viewLines(page) {
  return page.locator('.monaco-editor .view-lines').first().textContent();
}

/** The ghost text has stopped changing for a second (the final item replaced the streamed partials). */
async function ghostSettled(page) {
  await page.waitForFunction(() => {
    const g = window.__ghosts;
    const n = g.length;
    const now = Date.now();
    if (window.__lastN !== n) { window.__lastN = n; window.__lastT = now; return false; }
    return now - window.__lastT > 1000;
  }, null, { polling: 100, timeout: 30000 });
}

/** Ctrl+S, then wait until the editor tab is no longer dirty (the file is on disk). */
async function saveFile(page) {
  await page.locator('.tab.dirty').first().waitFor({ timeout: 15000 });
  await page.keyboard.press('Control+S');
  await page.locator('.tab.dirty').first().waitFor({ state: 'detached', timeout: 15000 });
}

async function main() {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'chr-'));
  let ctx;
  try {
  ctx = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    viewport: { width: 1280, height: 720 },
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'],
  });
    const page = ctx.pages()[0] || await ctx.newPage();
    page.on('console', (m) => { if (m.type() === 'error') log(`console: ${m.text().slice(0, 200)}`); });
    await page.goto(url);
    await page.locator('.monaco-workbench').waitFor({ timeout: 60000 });
    log('workbench');

    // open the file
    await page.keyboard.press('Control+P');
    await page.locator('.quick-input-widget input').waitFor({ timeout: 10000 });
    await page.keyboard.type(process.env.CODA_FILE);
    await page.locator(`.quick-input-list .monaco-list-row:has-text("${process.env.CODA_FILE}")`).first().waitFor({ timeout: 15000 });
    await page.keyboard.press('Enter');
    await page.locator('.monaco-editor .view-lines').first().waitFor({ timeout: 15000 });
    log('editor open');

    // the extension started the server and the model loaded
    await waitStatus(page, 'ready', 120000);
    log(`status ${result.statuses.at(-1)}`);

    // record every ghost text VS Code draws (it changes while the server streams partials)
    await page.evaluate((sel) => {
      window.__ghosts = [];
      const read = () => Array.from(document.querySelectorAll(sel)).map((e) => e.textContent).join('\n');
      new MutationObserver(() => {
        const t = read();
        if (t && window.__ghosts[window.__ghosts.length - 1] !== t) window.__ghosts.push(t);
      }).observe(document.body, { subtree: true, childList: true, characterData: true });
    }, GHOST);

    await page.locator('.monaco-editor .view-lines').first().click();
    await gotoLine(page, process.env.CODA_LINE);
    await page.keyboard.press('End');
    await page.keyboard.type(process.env.CODA_TYPE);   // typing triggers inline completion automatically
    log('typed');
    try {
      await page.locator(GHOST).first().waitFor({ timeout: 30000 });
    } catch {
      log('no automatic ghost text: triggering by hand');
      await palette(page, 'Trigger Inline Suggestion');
      await page.locator(GHOST).first().waitFor({ timeout: 60000 });
    }
    // the final item has arrived when the server is ready again and the ghost text stops changing
    await waitStatus(page, 'ready', 60000);
    await ghostSettled(page);
    result.ghosts = await page.evaluate(() => window.__ghosts);
    result.ghost_final = await ghostText(page);
    log(`ghost ${JSON.stringify(result.ghost_final)} after ${result.ghosts.length} versions`);
    await page.screenshot({ path: shotPath });

    // Esc dismisses the ghost text; asking again shows the same suggestion (answered from the cache)
    await page.keyboard.press('Escape');
    await page.locator(GHOST).first().waitFor({ state: 'detached', timeout: 10000 })
      .catch(() => log('Escape left the ghost text on screen'));
    result.ghost_count_after_escape = await page.locator(GHOST).count();
    await palette(page, 'Trigger Inline Suggestion');
    await page.locator(GHOST).first().waitFor({ timeout: 30000 });
    // the explicit request asks the server for several candidates: wait until they are in
    await waitStatus(page, 'busy', 10000).catch(() => log('no busy status after the explicit trigger'));
    await waitStatus(page, 'ready', 120000);
    await ghostSettled(page);
    result.ghost_retriggered = await ghostText(page);
    log(`ghost again ${JSON.stringify(result.ghost_retriggered)}`);

    // Alt+] (VS Code's Show Next Inline Suggestion) cycles to another candidate of the explicit request
    await page.keyboard.press('Alt+BracketRight');
    await page.waitForFunction(([sel, g]) => {
      const t = Array.from(document.querySelectorAll(sel)).map((e) => e.textContent).join('\n');
      return t && t !== g;
    }, [GHOST, result.ghost_retriggered], { polling: 50, timeout: 30000 })
      .catch(() => log('Alt+] showed no other candidate'));
    await page.waitForTimeout(300);
    result.ghost_cycled = await ghostText(page);
    log(`ghost after Alt+] ${JSON.stringify(result.ghost_cycled)}`);

    // Ctrl+Right accepts the next word only (VS Code's inlineSuggest.acceptNextWord); the rest stays as ghost text
    await page.keyboard.press('Control+ArrowRight');
    await page.waitForFunction(([sel, g]) => Array.from(document.querySelectorAll(sel)).map((e) => e.textContent)
      .join('\n') !== g, [GHOST, result.ghost_cycled], { polling: 50, timeout: 10000 })
      .catch(() => log('Ctrl+Right left the ghost text as it was'));
    await page.waitForTimeout(300);
    result.ghost_after_word = await ghostText(page);
    log(`ghost after accepting a word ${JSON.stringify(result.ghost_after_word)}`);

    // Tab accepts the rest
    if (await page.locator(GHOST).count()) {
      const linesWord = await viewLines(page);
      await page.keyboard.press('Tab');
      await page.waitForFunction((b) => document.querySelector('.monaco-editor .view-lines').textContent !== b,
        linesWord, { polling: 50, timeout: 10000 }).catch(() => log('Tab changed nothing on screen'));
    }
    result.lines_after_tab = await viewLines(page);
    await page.keyboard.press('Escape');     // hide the next suggestion that appears after accepting
    await saveFile(page);
    result.file_after_accept = fs.readFileSync(process.env.CODA_PATH, 'utf8');
    log('accepted and saved');
    result.accepted = true;
    save();

    // Fill Selection on a whole line
    await gotoLine(page, process.env.CODA_FILL_LINE);
    await page.keyboard.press('Home');
    await page.keyboard.press('Home');       // column 1, not the first non-blank
    await page.keyboard.press('Shift+End');
    const before = await page.locator('.monaco-editor .view-lines').first().textContent();
    await palette(page, '>CoDA: Fill Selection');
    log('fill started');
    await page.waitForFunction((b) => document.querySelector('.monaco-editor .view-lines').textContent !== b, before,
      { polling: 100, timeout: 90000 });
    await waitStatus(page, 'ready', 60000);
    await saveFile(page);
    result.file_after_fill = fs.readFileSync(process.env.CODA_PATH, 'utf8');
    result.filled = true;
    log('filled and saved');
    // idle again after the fill: its request has returned (progress gone) and the server reports ready
    await page.locator(`.statusbar-item:has-text("${FILL_PROGRESS}")`).first().waitFor({ state: 'detached', timeout: 30000 });
    await waitStatus(page, 'ready', 60000);
    result.status_final = result.statuses.at(-1);
  } catch (err) {
    result.error = String(err && err.stack || err);
  } finally {
    save();
    if (ctx) await ctx.close();
  }
}

main().then(() => process.exit(result.error ? 1 : 0));
