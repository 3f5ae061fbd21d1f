-- Drives headless Neovim through the coda plugin against a real coda-lsp, for tests/e2e/test_nvim.py.
--
-- nvim --headless --clean -u tests/e2e/nvim_driver.lua FILE, with env:
--   CODA_PLUGIN_DIR  editors/nvim          CODA_CMD     JSON list: the server command
--   CODA_MODEL       model directory       CODA_RESULT  where the JSON result goes
--   CODA_TARGET_LINE 1-based line to complete at the end of
--   CODA_FILL_LINES  "L1,L2" lines to fill with :CodaFill
-- It writes everything it saw to CODA_RESULT (stdout is unusable: headless nvim prints -- INSERT --)
-- and exits 0, or cquit with 3 on its own timeout / 4 on a server error. Python does the asserting.
vim.opt.rtp:prepend(os.getenv('CODA_PLUGIN_DIR'))
vim.opt.swapfile = false

local api = vim.api
local v = vim.version()
local result = { events = {}, partial_texts = {}, fill_partial_texts = {}, statuses = {}, tries = 0,
  nvim = ('%d.%d.%d'):format(v.major, v.minor, v.patch) }
local t0 = vim.uv.now()
local phase = 'start'
local bufnr = api.nvim_get_current_buf()
local target_line = tonumber(os.getenv('CODA_TARGET_LINE') or '2')

local function log(msg)
  table.insert(result.events, ('[%6d ms] %s: %s'):format(vim.uv.now() - t0, phase, msg))
end

local function finish(code)
  result.exit = code
  result.elapsed_ms = vim.uv.now() - t0
  local f = assert(io.open(os.getenv('CODA_RESULT'), 'w'))
  f:write(vim.json.encode(result))
  f:close()
  vim.cmd(code == 0 and 'qa!' or ('cquit! ' .. code))
end

vim.defer_fn(function()
  result.error = 'driver timeout in phase ' .. phase
  finish(3)
end, tonumber(os.getenv('CODA_DRIVER_TIMEOUT_MS') or '150000'))

local function buf_text()
  return table.concat(api.nvim_buf_get_lines(bufnr, 0, -1, false), '\n')
end

local function extmark_text(ns)
  local marks = api.nvim_buf_get_extmarks(bufnr, ns, 0, -1, { details = true })
  if #marks == 0 then
    return nil
  end
  local d = marks[1][4]
  local parts = {}
  for _, chunk in ipairs(d.virt_text or {}) do
    if chunk[2] ~= 'ComplHintMore' then -- not Neovim's " (2/4)" candidate counter
      parts[#parts + 1] = chunk[1]
    end
  end
  local text = table.concat(parts)
  for _, vl in ipairs(d.virt_lines or {}) do
    local p = {}
    for _, chunk in ipairs(vl) do
      p[#p + 1] = chunk[1]
    end
    text = text .. '\n' .. table.concat(p)
  end
  return text, marks[1][2], marks[1][3], d
end

-- ghost text: Neovim 0.12 draws it in its own namespace; on 0.11 the plugin's fallback does
local ghost_ns = api.nvim_create_namespace(vim.lsp.inline_completion and 'nvim.lsp.inline_completion' or 'coda.ghost')
local coda = require('coda')
local partial = require('coda.partial')

-- every drawn partial, read back from the buffer's extmarks (what the user sees)
api.nvim_create_autocmd('User', { pattern = 'CodaPartial', callback = function(ev)
  if ev.data.done then
    return
  end
  local shown, _, _, d = extmark_text(partial.ns)
  local by_hl = {} -- what is drawn in each highlight (lines joined with \n), read back from the extmark
  for i, line in ipairs(d and vim.list_extend({ d.virt_text or {} }, d.virt_lines or {}) or {}) do
    for _, chunk in ipairs(line) do
      local hl = chunk[2]
      by_hl[hl] = (by_hl[hl] or '') .. (i > 1 and by_hl[hl .. '#'] ~= i and '\n' or '') .. chunk[1]
      by_hl[hl .. '#'] = i
    end
  end
  local into = phase == 'fill' and result.fill_partial_texts or result.partial_texts
  into[#into + 1] = { step = ev.data.step, steps = ev.data.steps, text = ev.data.text, shown = shown,
    prefix = ev.data.prefix, confident = by_hl.CodaPartial or '', pending = by_hl.CodaPartialPending or '' }
end })

local start_fill, press_tab, partial_accepts

-- phase complete: insert mode at the end of the target line, wait for ghost text, press <Tab>
local function try_ghost()
  result.tries = result.tries + 1
  if result.tries > 6 then
    result.error = 'no non-empty ghost text after 6 tries'
    return finish(5)
  end
  log('try ' .. result.tries)
  local function poll()
    if phase ~= 'complete' then
      return
    end
    local text, row, col = extmark_text(ghost_ns)
    if text == nil then
      return vim.defer_fn(poll, 30)
    end
    if text:match('^%s*$') then -- empty ghost text: type one more character to get a new request
      log('empty ghost text, typing')
      api.nvim_feedkeys('x', 'n', false)
      return vim.defer_fn(try_ghost, 0)
    end
    phase = 'accept'
    local cur = api.nvim_win_get_cursor(0)
    result.ghost = { text = text, row = row, col = col, cursor = cur, before = buf_text(),
      partial_left = extmark_text(partial.ns) } -- the streamed text is cleared once the final item is shown
    log(('ghost %q at %d:%d'):format(text, row, col))
    if os.getenv('CODA_PARTIAL_ACCEPT') then
      return partial_accepts()
    end
    press_tab()
  end
  vim.defer_fn(poll, 30)
end

-- <Tab> accepts all of the ghost text; then the fill phase
press_tab = function()
  api.nvim_create_autocmd('TextChangedI', { once = true, buffer = bufnr, callback = function()
    result.after_accept = buf_text()
    result.cursor_after_accept = api.nvim_win_get_cursor(0)
    log('accepted')
    vim.schedule(start_fill)
  end })
  api.nvim_feedkeys(vim.keycode('<Tab>'), 'm', false) -- coda's insert-mode mapping
end

-- wait until the ghost text is shown and differs from `old` (nil: any), then call on_ghost(text)
local function wait_ghost(old, what, on_ghost, tries)
  tries = tries or 0
  local text = extmark_text(ghost_ns)
  if text ~= nil and text ~= old and not text:match('^%s*$') then
    return on_ghost(text)
  end
  if tries > 600 then
    result.error = 'no ghost text ' .. what
    return finish(6)
  end
  vim.defer_fn(function() wait_ghost(old, what, on_ghost, tries + 1) end, 30)
end

-- a key whose effect is an edit: record the buffer and the ghost text that follows, then next()
local function accept_step(key, name, next_step, wait_rest)
  local before, ghost = buf_text(), extmark_text(ghost_ns)
  local rec = { key = key, before = before, ghost = ghost, cursor = api.nvim_win_get_cursor(0) }
  result.partial_accepts[#result.partial_accepts + 1] = rec
  api.nvim_create_autocmd('TextChangedI', { once = true, buffer = bufnr, callback = function()
    rec.after = buf_text()
    log(name .. ' accepted')
    if not wait_rest then
      return vim.schedule(next_step)
    end
    -- the rest of the suggestion is shown again (answered by the server's type-through cache)
    wait_ghost(nil, 'after ' .. name, function(rest)
      rec.rest = rest
      log(('%s: rest %q'):format(name, rest))
      next_step()
    end)
  end })
  api.nvim_feedkeys(vim.keycode(key), 'm', false)
end

-- <M-]> shows another candidate; <M-Right> takes a word (the rest stays shown), <M-Down> a line
partial_accepts = function()
  result.partial_accepts = {}
  local first = result.ghost.text
  api.nvim_feedkeys(vim.keycode('<M-]>'), 'm', false)
  wait_ghost(first, 'after <M-]>', function(other)
    result.cycled = { before = first, after = other }
    log(('cycled to %q'):format(other))
    accept_step('<M-Right>', 'word', function()
      accept_step('<M-Down>', 'line', start_fill, false)
    end, true)
  end)
end

local stream_tab

start_fill = function()
  phase = 'fill'
  api.nvim_feedkeys(vim.keycode('<Esc>'), 'n', false)
  vim.schedule(function()
    local l1, l2 = (os.getenv('CODA_FILL_LINES') or '1,1'):match('(%d+),(%d+)')
    result.before_fill = buf_text()
    api.nvim_create_autocmd('User', { pattern = 'CodaFillDone', once = true, callback = function(ev)
      result.fill = ev.data
      -- the edit arrives (workspace/applyEdit) before the command's response
      result.after_fill = buf_text()
      vim.cmd('silent write')
      log('fill done ' .. vim.inspect(ev.data))
      if os.getenv('CODA_PARTIAL_ACCEPT') then
        return vim.schedule(stream_tab)
      end
      phase = 'done'
      vim.schedule(function() finish(0) end)
    end })
    vim.cmd(('%s,%sCodaFill'):format(l1, l2))
  end)
end

-- <Tab> while the text still streams: accepts the confident prefix decoded so far (the server's
-- `prefix`), not a literal tab. coda.accept (what <Tab> maps to) is called from the first partial
-- that has a prefix, so the final item cannot arrive in between.
stream_tab = function()
  phase = 'stream'
  api.nvim_create_autocmd('User', { pattern = 'CodaPartial', callback = function(ev)
    if phase ~= 'stream' or ev.data.done then
      return
    end
    local prefix = partial.prefix(bufnr)
    if not prefix or prefix == '' then
      return
    end
    phase = 'stream-accepted'
    local rec = { before = buf_text(), cursor = api.nvim_win_get_cursor(0), prefix = prefix, shown = ev.data.text,
      step = ev.data.step, steps = ev.data.steps }
    result.stream_tab = rec
    rec.returned = coda.accept(bufnr)
    vim.schedule(function()
      rec.after = buf_text()
      log(('tab while streaming at step %d/%d: %q'):format(rec.step, rec.steps, prefix))
      phase = 'done'
      finish(0)
    end)
    return true
  end })
  api.nvim_feedkeys(vim.keycode('<Esc>'), 'n', false)
  vim.schedule(function()
    local line = api.nvim_buf_get_lines(bufnr, 0, 1, false)[1]
    api.nvim_win_set_cursor(0, { 1, #line })
    api.nvim_feedkeys('a', 'n', false)
    log('insert at the end of line 1 for the stream')
  end)
end

api.nvim_create_autocmd('User', { pattern = 'CodaStatus', callback = function(ev)
  result.statuses[#result.statuses + 1] = ev.data.state
  result.statusline = coda.statusline()
  if ev.data.state == 'error' then
    result.error = 'server error: ' .. tostring(ev.data.message)
    return finish(4)
  end
  if ev.data.state == 'ready' and phase == 'start' then
    phase = 'complete'
    log('ready; statusline ' .. coda.statusline())
    local line = api.nvim_buf_get_lines(bufnr, target_line - 1, target_line, false)[1]
    api.nvim_win_set_cursor(0, { target_line, #line })
    api.nvim_feedkeys('a', 'n', false) -- insert mode after the last character -> requests start
    try_ghost()
  end
end })

coda.setup({
  cmd = vim.json.decode(os.getenv('CODA_CMD')),
  model_path = os.getenv('CODA_MODEL'),
  steps = tonumber(os.getenv('CODA_STEPS') or '8'),
  max_tokens = 16,
  debounce_ms = 0,
  streaming = true,
  -- random weights are unsure of every token: the confidence gate would hide everything
  min_confidence = 0,
  min_shown_confidence = 0,
})
