--- :checkhealth coda
local M = {}

function M.check()
  local h = vim.health
  local coda = require('coda')
  local config = require('coda.config')
  h.start('coda: Neovim')
  if vim.fn.has('nvim-0.11') == 1 then
    h.ok('Neovim ' .. tostring(vim.version()))
  else
    h.error('Neovim >= 0.11 is needed (vim.lsp.config / vim.lsp.enable)')
  end
  if vim.lsp.inline_completion then
    h.ok('vim.lsp.inline_completion is available (ghost text by Neovim)')
  else
    h.warn('vim.lsp.inline_completion is missing (Neovim < 0.12): using coda\'s own ghost text')
  end

  h.start('coda: server')
  local cmd = config.cmd()
  if vim.fn.executable(cmd[1]) == 1 then
    h.ok('command: ' .. table.concat(cmd, ' '))
  else
    h.error(('%q is not executable'):format(cmd[1]),
      { 'pip install -e . in the coda-lsp repo (gives .venv/bin/coda-lsp)',
        "or require('coda').setup{ server_path = '/path/to/coda-lsp' }",
        "or require('coda').setup{ python = '/path/to/python' } (runs python -m coda_lsp)" })
  end
  local opts = config.server_options()
  if opts.modelPath then
    if vim.fn.isdirectory(vim.fn.expand(opts.modelPath)) == 1 then
      h.ok('model: ' .. opts.modelPath)
    else
      h.error('model directory not found: ' .. opts.modelPath, { 'fix setup{ model_path = ... }' })
    end
  else
    h.info('model: the embedded default model')
  end
  local clients = coda.clients()
  if #clients == 0 then
    h.info('no coda-lsp client running (it starts when a matching buffer opens)')
  else
    h.ok(('%d client(s); state %s%s'):format(#clients, coda.status.state,
      coda.status.message and (' (' .. coda.status.message .. ')') or ''))
  end
  if coda.status.state == 'error' then
    h.error('server state: error' .. (coda.status.message and (': ' .. coda.status.message) or ''),
      { 'see :LspLog', 'run the server command in a terminal to see its message' })
  end
end

return M
