-- Removing a setting at run time resets it, end to end: the real plugin and server. setup{ steps = 8 }
-- streams 8-step partials; configure{} with the same settings but no `steps` streams the server's
-- default steps for the next request. Env as nvim_driver.lua (CODA_PLUGIN_DIR, CODA_CMD, CODA_MODEL,
-- CODA_RESULT); writes {first = [steps...], after = [steps...]} and exits 0 (3 on its own timeout).
vim.opt.rtp:prepend(os.getenv('CODA_PLUGIN_DIR'))
vim.opt.swapfile = false
local api = vim.api
local result = { first = {}, after = {}, events = {} }
local phase = 'start'
local bufnr = api.nvim_get_current_buf()

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
end, 120000)

local coda = require('coda')
local settings = { -- the same on both sides but for `steps`
  cmd = vim.json.decode(os.getenv('CODA_CMD')), model_path = os.getenv('CODA_MODEL'), max_tokens = 16,
  debounce_ms = 0, streaming = true, speculate = false, min_confidence = 0, min_shown_confidence = 0,
}

local function type_char()
  api.nvim_feedkeys('x', 'n', false) -- an edit: a new request (nothing cached for this text)
end

api.nvim_create_autocmd('User', { pattern = 'CodaPartial', callback = function(ev)
  local into = phase == 'first' and result.first or phase == 'after' and result.after or nil
  if into == nil then
    return
  end
  into[#into + 1] = ev.data.steps
  if not ev.data.done then
    return
  end
  if phase == 'first' then
    phase = 'after'
    local again = vim.deepcopy(settings)
    again.cmd = nil
    coda.configure(again) -- no `steps`: back to the server's default
    vim.schedule(type_char)
  else
    phase = 'done'
    vim.schedule(function() finish(0) end)
  end
end })

api.nvim_create_autocmd('User', { pattern = 'CodaStatus', callback = function(ev)
  if ev.data.state == 'error' then
    result.error = 'server error: ' .. tostring(ev.data.message)
    return finish(4)
  end
  if ev.data.state == 'ready' and phase == 'start' then
    phase = 'first'
    local line = api.nvim_buf_get_lines(bufnr, 1, 2, false)[1]
    api.nvim_win_set_cursor(0, { 2, #line })
    api.nvim_feedkeys('a', 'n', false)
    vim.schedule(type_char)
  end
end })

coda.setup(vim.tbl_extend('force', settings, { steps = 8 }))
