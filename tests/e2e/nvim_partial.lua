-- The partial-text drawing of the coda Neovim plugin, driven with the server's notification format
-- (tests/e2e/test_nvim.py). env: CODA_PLUGIN_DIR, CODA_RESULT. Records what the buffer shows after
-- each action; every check is in the test.
vim.opt.rtp:prepend(os.getenv('CODA_PLUGIN_DIR'))
local api = vim.api
local partial = require('coda.partial')
local result = { shown = {} }

local buf = api.nvim_get_current_buf()
api.nvim_buf_set_name(buf, vim.fn.getcwd() .. '/p.py')
api.nvim_buf_set_lines(buf, 0, -1, false, { 'def add(a, b):', '    return ', '', 'x = 1' })
partial.attach(buf)
api.nvim_win_set_cursor(0, { 2, 11 })
local uri = vim.uri_from_bufnr(buf)

local function shown()
  local marks = api.nvim_buf_get_extmarks(buf, partial.ns, 0, -1, { details = true })
  if #marks == 0 then
    return vim.NIL
  end
  local d = marks[1][4]
  local text = ''
  for _, c in ipairs(d.virt_text or {}) do text = text .. c[1] end
  for _, l in ipairs(d.virt_lines or {}) do
    local s = ''
    for _, c in ipairs(l) do s = s .. c[1] end
    text = text .. '\n' .. s
  end
  return { row = marks[1][2], col = marks[1][3], text = text }
end

local function notify(text, step, done)
  partial.handler(nil, { uri = uri, version = vim.NIL, text = text, step = step, steps = 3, maskedCount = 3 - step,
    done = done or false, range = { start = { line = 1, character = 11 }, ['end'] = { line = 1, character = 11 } } },
    { client_id = -1 })
end

local function record(label)
  result.shown[#result.shown + 1] = { label = label, shown = shown() }
end

notify('a', 1); record('step 1')
notify('a + b', 2); record('step 2')
notify('a + b\n# sum', 3); record('two lines')
api.nvim_win_set_cursor(0, { 4, 0 }); vim.api.nvim_exec_autocmds('CursorMoved', { buffer = buf }); record('moved away')
notify('a + b', 3); record('same request after moving away')
api.nvim_buf_set_lines(buf, 2, 3, false, { '' }); vim.api.nvim_exec_autocmds('TextChanged', { buffer = buf })
api.nvim_win_set_cursor(0, { 2, 11 })
notify('a - b', 1); record('after an edit')
notify('', 3, true); record('done')
result.lines = api.nvim_buf_get_lines(buf, 0, -1, false)
local f = assert(io.open(os.getenv('CODA_RESULT'), 'w'))
f:write(vim.json.encode(result))
f:close()
vim.cmd('qa!')
