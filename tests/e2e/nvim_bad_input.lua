-- Bad-input scenarios for the coda Neovim plugin (tests/e2e/test_nvim.py), env:
--   CODA_PLUGIN_DIR, CODA_RESULT, CODA_SCENARIO = missing | crash, CODA_CMD (JSON, for crash)
-- Records the notifications and the plugin state, then exits 0 (3 on its own timeout).
vim.opt.rtp:prepend(os.getenv('CODA_PLUGIN_DIR'))
local result = { notes = {}, statuses = {} }
local function finish(code)
  local coda = require('coda')
  result.state = coda.status.state
  result.message = coda.status.message
  result.statusline = coda.statusline()
  result.clients = #vim.lsp.get_clients({ name = 'coda' })
  result.last_exit = coda.last_exit
  local f = assert(io.open(os.getenv('CODA_RESULT'), 'w'))
  f:write(vim.json.encode(result))
  f:close()
  vim.cmd(code == 0 and 'qa!' or ('cquit! ' .. code))
end
vim.defer_fn(function() result.error = 'timeout'; finish(3) end, 20000)
vim.notify = function(msg, level)
  table.insert(result.notes, { msg = msg, level = level })
end
vim.api.nvim_create_autocmd('User', { pattern = 'CodaStatus', callback = function(ev)
  table.insert(result.statuses, ev.data.state)
  if ev.data.state == 'error' then
    -- the exit notification is scheduled after the state change
    vim.schedule(function() vim.schedule(function() finish(0) end) end)
  end
end })
local scenario = os.getenv('CODA_SCENARIO')
if scenario == 'missing' then
  require('coda').setup({ server_path = '/nonexistent/bin/coda-lsp' })
  vim.cmd('edit ' .. vim.fn.tempname() .. '.py')
  vim.schedule(function()
    vim.cmd('checkhealth coda')
    result.health = vim.api.nvim_buf_get_lines(0, 0, -1, false)
    finish(0)
  end)
else
  require('coda').setup({ cmd = vim.json.decode(os.getenv('CODA_CMD')) })
  -- after startup, when filetype detection is on (the FileType event starts the client)
  vim.api.nvim_create_autocmd('VimEnter', { nested = true, callback = function()
    vim.cmd('edit ' .. vim.fn.tempname() .. '.py')
  end })
end
