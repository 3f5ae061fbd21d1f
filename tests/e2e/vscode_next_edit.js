// Drives code-server through a next edit (editors/vscode/src/nextEdit.ts), for tests/e2e/test_vscode_next_edit.py.
//
//   node tests/e2e/vscode_next_edit.js URL RESULT_JSON SCREENSHOT_PNG
// env: CODA_FILE, CODA_PATH (the file, read back after saving), CODA_EDIT_LINE (1-based), CODA_EDIT_COL
// (1-based column of the word to rename), CODA_NEW (the new name), CHROMIUM. Records what was drawn (the
// decorations' text read from the DOM), where Tab put the cursor, and the file after the second Tab.
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const { chromium } = require('playwright-core');

const [url, resultPath, shotPath] = process.argv.slice(2);
const result = { events: [] };
const t0 = Date.now();
const log = (msg) => result.events.push(`[${String(Date.now() - t0).padStart(6)} ms] ${msg}`);
const save = () => fs.writeFileSync(resultPath, JSON.stringify(result, null, 1));

async function gotoLine(page, line, col) {
  await page.keyboard.press('Control+G');
  await page.locator('.quick-input-widget input').waitFor({ timeout: 10000 });
  await page.keyboard.type(`${line}:${col}`);
  await page.keyboard.press('Enter');
}

/** Text VS Code draws for our decorations: `after` content (CSS ::after) and struck-through spans. */
async function decorations(page) {
  return page.evaluate(() => {
    const out = { after: [], struck: [] };
    for (const el of document.querySelectorAll('.monaco-editor .view-lines span')) {
      const c = getComputedStyle(el, '::after').content;
      if (c && c !== 'none' && c !== 'normal' && c !== '""') out.after.push(c.replace(/^"|"$/g, ''));
      if (el.textContent && el.textContent.trim() && getComputedStyle(el).textDecorationLine.includes('line-through')
          && el.children.length === 0) out.struck.push(el.textContent);
    }
    return out;
  });
}

async function cursor(page) {
  const item = page.locator('.statusbar-item:has-text("Ln ")').first();
  return (await item.textContent({ timeout: 5000 }).catch(() => '')).trim();
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
    await page.keyboard.press('Control+P');
    await page.locator('.quick-input-widget input').waitFor({ timeout: 10000 });
    await page.keyboard.type(process.env.CODA_FILE);
    await page.locator(`.quick-input-list .monaco-list-row:has-text("${process.env.CODA_FILE}")`).first().waitFor({ timeout: 15000 });
    await page.keyboard.press('Enter');
    await page.locator('.monaco-editor .view-lines').first().waitFor({ timeout: 15000 });
    await page.locator('.statusbar-item:has-text("CoDA: ready")').first().waitFor({ timeout: 120000 });
    log('ready');

    // the user's edit: rename the word at LINE:COL (select it with Ctrl+Shift+Right, type the new name)
    await page.locator('.monaco-editor .view-lines').first().click();
    await gotoLine(page, process.env.CODA_EDIT_LINE, process.env.CODA_EDIT_COL);
    await page.keyboard.press('Control+Shift+ArrowRight');
    await page.keyboard.type(process.env.CODA_NEW);   // VS Code shows no ghost text in this test (inlineSuggest off)
    log('edited');
    await page.waitForTimeout(500);
    result.lines_after_edit = await page.locator('.monaco-editor .view-lines').first().textContent();

    // the next edit is drawn: an `after` decoration appears
    await page.waitForFunction(() => {
      for (const el of document.querySelectorAll('.monaco-editor .view-lines span')) {
        const c = getComputedStyle(el, '::after').content;
        if (c && c !== 'none' && c !== 'normal' && c !== '""') return true;
      }
      return false;
    }, null, { polling: 100, timeout: 90000 });
    await page.waitForTimeout(300);
    result.drawn = await decorations(page);
    result.lines_before = await page.locator('.monaco-editor .view-lines').first().textContent();
    await page.screenshot({ path: shotPath });
    log(`drawn ${JSON.stringify(result.drawn)}`);

    // Tab from elsewhere jumps to it; Tab on it applies it
    await gotoLine(page, 1, 1);
    result.cursor_before_jump = await cursor(page);
    await page.keyboard.press('Tab');
    await page.waitForTimeout(300);
    result.cursor_after_jump = await cursor(page);
    result.drawn_after_jump = await decorations(page);
    await page.keyboard.press('Tab');
    await page.waitForFunction(() => {
      for (const el of document.querySelectorAll('.monaco-editor .view-lines span')) {
        const c = getComputedStyle(el, '::after').content;
        if (c && c !== 'none' && c !== 'normal' && c !== '""') return false;
      }
      return true;
    }, null, { polling: 100, timeout: 10000 }).catch(() => log('the decoration stayed after the second Tab'));
    await page.keyboard.press('Control+S');
    await page.locator('.tab.dirty').first().waitFor({ state: 'detached', timeout: 15000 });
    result.file_after = fs.readFileSync(process.env.CODA_PATH, 'utf8');
    log('applied and saved');
  } catch (err) {
    result.error = String(err && err.stack || err);
  } finally {
    save();
    if (ctx) await ctx.close();
  }
}

main().then(() => process.exit(result.error ? 1 : 0));
