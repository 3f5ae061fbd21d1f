-- Drives headless Neovim through a next edit (coda.next_edit) against a real coda-lsp, for test_nvim_next_edit.py.
--
-- nvim --headless --clean -u tests/e2e/nvim_next_edit.lua FILE, with env:
--   CODA_PLUGIN_DIR editors/nvim    CODA_CMD JSON list: the server command    CODA_RESULT where the JSON goes
--   CODA_EDIT "LINE,COL,KEYS": normal-mode keys typed at 1-based LINE, 0-based COL (the user's edit)
-- Records what was drawn (extmarks), where <Tab> moved the cursor, and the buffer after the second <Tab>.
vim.opt.rtp:prepend(os.getenv('CODA_PLUGIN_DIR'))
vim.opt.swapfile = false

local api = vim.api
local v = vim.version()
local result = { events = {}, nvim = ('%d.%d.%d'):format(v.major, v.minor, v.patch) }
local t0 = vim.uv.now()
local bufnr = api.nvim_get_current_buf()
local phase = 'start'

local function log(msg)
  table.insert(result.events, ('[%6d ms] %s: %s'):format(vim.uv.now() - t0, phase, msg))
end

local function finish(code)
  result.exit = code
  local f = assert(io.open(os.getenv('CODA_RESULT'), 'w'))
  f:write(vim.json.encode(result))
  f:close()
  vim.cmd(code == 0 and 'qa!' or ('cquit! ' .. code))
end

vim.defer_fn(function()
  result.error = 'driver timeout in phase ' .. phase
  finish(3)
end, tonumber(os.getenv('CODA_DRIVER_TIMEOUT_MS') or '120000'))

local function buf_text()
  return table.concat(api.nvim_buf_get_lines(bufnr, 0, -1, false), '\n')
end

local function keys(k)
  api.nvim_feedkeys(api.nvim_replace_termcodes(k, true, false, true), 'mx', false)
end

local ne = require('coda.next_edit')
local coda = require('coda')

api.nvim_create_autocmd('User', { pattern = 'CodaNextEdit', callback = function(ev)
  if phase ~= 'edited' then
    return
  end
  phase = 'shown'
  local edit = ev.data.edit
  result.edit = edit
  result.before_accept = buf_text()
  result.marks = {}
  for _, m in ipairs(api.nvim_buf_get_extmarks(bufnr, ne.ns, 0, -1, { details = true })) do
    local d = m[4]
    local virt = {}
    for _, chunk in ipairs(d.virt_text or {}) do
      virt[#virt + 1] = chunk[1]
    end
    result.marks[#result.marks + 1] = { row = m[2], col = m[3], end_row = d.end_row, end_col = d.end_col,
      hl = d.hl_group, virt_text = table.concat(virt), virt_lines = d.virt_lines and #d.virt_lines or 0 }
  end
  log('drawn ' .. vim.inspect(edit.range) .. ' ' .. edit.text)
  if os.getenv('CODA_TOHTML') then -- the window as HTML, highlights and virtual text included (for a screenshot)
    local ok, html = pcall(function() return require('tohtml').tohtml(0, { title = 'coda next edit' }) end)
    if ok then
      vim.fn.writefile(html, os.getenv('CODA_TOHTML'))
    else
      log('tohtml failed: ' .. tostring(html))
    end
  end
  vim.schedule(function()
    api.nvim_win_set_cursor(0, { 1, 0 })
    keys('<Tab>') -- the cursor is elsewhere: jump
    result.cursor_after_jump = api.nvim_win_get_cursor(0)
    result.shown_after_jump = ne.current_edit(bufnr) ~= nil
    phase = 'accept'
    keys('<Tab>') -- on it: apply
    result.after_accept = buf_text()
    result.shown_after_accept = ne.current_edit(bufnr) ~= nil
    vim.cmd('silent write')
    finish(0)
  end)
end })

api.nvim_create_autocmd('User', { pattern = 'CodaStatus', callback = function(ev)
  log('status ' .. ev.data.state .. ' ' .. tostring(ev.data.message))
  if ev.data.state == 'error' then
    result.error = 'server error: ' .. tostring(ev.data.message)
    finish(4)
  end
  if ev.data.state == 'ready' and phase == 'start' then
    phase = 'edited'
    vim.schedule(function()
      local line, col, k = os.getenv('CODA_EDIT'):match('^(%d+),(%d+),(.*)$')
      api.nvim_win_set_cursor(0, { tonumber(line), tonumber(col) })
      result.before_edit = buf_text()
      keys(k) -- e.g. ciwitems<Esc>: InsertLeave sends coda/nextEdit
      result.after_edit = buf_text()
      log('edited')
    end)
  end
end })

coda.setup({
  cmd = vim.json.decode(os.getenv('CODA_CMD')),
  enabled = false, -- no ghost text in this test: <Tab> is the next edit's
  next_edit_min_confidence = 0, -- the weak default model: show whatever it proposes
  next_edit_debounce_ms = 0,
  threads = 1,
})
