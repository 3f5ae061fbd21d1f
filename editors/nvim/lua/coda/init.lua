--- coda.nvim: inline completions from coda-lsp (a masked-diffusion code model) in Neovim.
---
---   require('coda').setup({ model_path = '~/models/coda', steps = 16 })
---
--- Uses vim.lsp.config / vim.lsp.enable (Neovim >= 0.11) and vim.lsp.inline_completion
--- (Neovim 0.12) for the ghost text; on 0.11 a small built-in ghost-text client takes its place
--- (coda.fallback). `coda/partialCompletion` notifications are drawn by coda.partial, and
--- `:CodaFill` rewrites a visual selection through the server's `coda.fillSelection` command.
local config = require('coda.config')
local partial = require('coda.partial')

local M = {}
local api = vim.api

M.name = 'coda'
---@type {state: string, message: string?, progress: string?}
M.status = { state = 'stopped' }
M.enabled = true
M.last_exit = nil ---@type {code: integer, signal: integer, after_s: number}?

local function notify(msg, level)
  vim.notify('coda: ' .. msg, level or vim.log.levels.INFO)
end

local function set_status(state, message)
  M.status.state = state
  M.status.message = message
  api.nvim_exec_autocmds('User', { pattern = 'CodaStatus', modeline = false, data = vim.deepcopy(M.status) })
  pcall(vim.cmd.redrawstatus)
end

--- Clients of this plugin (optionally only those attached to `bufnr`).
---@return vim.lsp.Client[]
function M.clients(bufnr)
  return vim.lsp.get_clients({ name = M.name, bufnr = bufnr })
end

--- `coda/status` {state, message?}
local function status_handler(_, params)
  if type(params) == 'table' and type(params.state) == 'string' then
    if params.state ~= 'loading' then
      M.status.progress = nil
    end
    set_status(params.state, params.message)
  end
end

--- `$/progress` during the model load: keep the percentage for the statusline, then let the
--- default handler feed vim.lsp.status() / LspProgress.
local function progress_handler(err, result, ctx)
  local v = type(result) == 'table' and result.value
  if type(v) == 'table' then
    if v.kind == 'end' then
      M.status.progress = nil
    else
      M.status.progress = v.percentage and ('%d%%'):format(v.percentage) or v.message or v.title
    end
    pcall(vim.cmd.redrawstatus)
  end
  return vim.lsp.handlers['$/progress'](err, result, ctx)
end

local function has_inline()
  return vim.lsp.inline_completion ~= nil
end

local function set_keymaps(bufnr)
  local km = config.current.keymaps or {}
  local function map(lhs, kind, desc)
    if lhs then
      vim.keymap.set('i', lhs, function()
        if M.accept(bufnr, kind) then
          return ''
        end
        if kind == 'all' and lhs == km.next_edit_accept and require('coda.next_edit').current_edit(bufnr) then
          vim.schedule(function() -- no ghost text: <Tab> goes to the next edit (sidekick's rule)
            require('coda.next_edit').jump_or_apply(bufnr)
          end)
          return ''
        end
        return lhs
      end, { buffer = bufnr, expr = true, replace_keycodes = true, desc = 'coda: ' .. desc })
    end
  end
  map(km.accept, 'all', 'accept the ghost text (or what is shown while it streams)')
  map(km.accept_word, 'word', 'accept the next word of the ghost text')
  map(km.accept_line, 'line', 'accept the next line of the ghost text')
  for lhs, count in pairs({ [km.next or false] = 1, [km.prev or false] = -1 }) do
    if lhs then
      vim.keymap.set('i', lhs, function()
        M.cycle(bufnr, count)
      end, { buffer = bufnr, desc = 'coda: ' .. (count > 0 and 'next' or 'previous') .. ' candidate' })
    end
  end
  if km.dismiss then
    vim.keymap.set('i', km.dismiss, function()
      M.dismiss(bufnr)
    end, { buffer = bufnr, desc = 'coda: dismiss the ghost text' })
  end
end

--- Accept the ghost text: all of it, or its next 'word' / 'line'; true when there was one. While the
--- text still streams (no item yet), the confident prefix decoded so far is accepted.
---@param kind? 'all'|'word'|'line'
function M.accept(bufnr, kind)
  bufnr = bufnr or api.nvim_get_current_buf()
  kind = kind or 'all'
  local accepted
  if has_inline() then
    accepted = require('coda.accept').inline(bufnr, kind)
  else
    accepted = require('coda.fallback').accept(bufnr, kind)
  end
  if accepted then
    return true
  end
  local prefix = partial.prefix(bufnr)
  if prefix == nil or prefix == '' then
    return false
  end
  local text = kind == 'all' and prefix or require('coda.accept').split(prefix, kind)
  partial.clear(bufnr, 'moved')
  vim.schedule(function()
    require('coda.accept').insert_at_cursor(bufnr, text)
  end)
  return true
end

--- Show the next (count 1) or previous (count -1) candidate.
function M.cycle(bufnr, count)
  bufnr = bufnr or api.nvim_get_current_buf()
  if has_inline() then
    local client = M.clients(bufnr)[1]
    return require('coda.accept').cycle_inline(bufnr, count, client)
  end
  return require('coda.fallback').cycle(bufnr, count)
end

function M.dismiss(bufnr)
  bufnr = bufnr or api.nvim_get_current_buf()
  partial.clear(bufnr, 'moved')
  if has_inline() then
    -- toggling the capability off and on hides the current item and cancels its requests
    for _, c in ipairs(M.clients(bufnr)) do
      vim.lsp.inline_completion.enable(false, { bufnr = bufnr })
      vim.lsp.inline_completion.enable(M.enabled, { bufnr = bufnr })
    end
  else
    require('coda.fallback').dismiss(bufnr)
  end
end

local function enable_inline(bufnr, client_id, on)
  if has_inline() then
    vim.lsp.inline_completion.enable(on, { bufnr = bufnr })
  else
    require('coda.fallback').enable(bufnr, client_id, on)
  end
end

local function on_attach(client, bufnr)
  partial.attach(bufnr)
  enable_inline(bufnr, client.id, M.enabled)
  set_keymaps(bufnr)
  require('coda.next_edit').attach(bufnr)
end

--- Tell the user why the server stopped; never restart it in a loop (Neovim does not restart
--- a client by itself; `:CodaRestart` does it on request).
local function on_exit(code, signal, client_id)
  -- called in a fast event context: the status autocmd and notify must run on the main loop
  vim.schedule(function()
    local started = M._started_at and M._started_at[client_id]
    local after = started and (vim.uv.now() - started) / 1000 or 0
    M.last_exit = { code = code, signal = signal, after_s = after }
    if code == 0 and signal == 0 then
      set_status('stopped')
      return
    end
    local how = signal ~= 0 and ('signal %d'):format(signal) or ('exit code %d'):format(code)
    local hint = (not started or after < 10)
        and ('it failed at start: run `' .. table.concat(config.cmd(), ' ') .. '` in a terminal to see why, '
          .. 'and check :checkhealth coda')
      or 'see :LspLog, then :CodaRestart'
    set_status('error', 'server stopped (' .. how .. ')')
    notify(('coda-lsp stopped (%s) after %.1f s: %s'):format(how, after, hint), vim.log.levels.ERROR)
  end)
end

--- The vim.lsp.config table for the server.
function M.lsp_config()
  local cfg = config.current
  return {
    cmd = config.cmd(cfg),
    filetypes = cfg.filetypes,
    root_markers = cfg.root_markers,
    init_options = config.server_options(cfg),
    handlers = {
      ['coda/partialCompletion'] = partial.handler,
      ['coda/status'] = status_handler,
      ['$/progress'] = progress_handler,
    },
    on_init = function(client)
      -- a server that exits before this point failed at start (on_exit finds no time here)
      M._started_at = M._started_at or {}
      M._started_at[client.id] = vim.uv.now()
      set_status('loading')
    end,
    on_attach = on_attach,
    on_exit = on_exit,
  }
end

--- Set up the plugin; calling it again updates the settings of a running server.
---@param opts table?
function M.setup(opts)
  if vim.fn.has('nvim-0.11') ~= 1 then
    notify('needs Neovim >= 0.11 (vim.lsp.config); this is ' .. tostring(vim.version()), vim.log.levels.ERROR)
    return
  end
  local cfg = config.merge(opts)
  M.enabled = cfg.enabled ~= false
  partial.enabled = M.enabled and cfg.streaming ~= false
  partial.setup_highlights()
  require('coda.next_edit').setup_highlights()
  require('coda.commands').create(M)
  local exe = config.cmd(cfg)[1]
  if vim.fn.executable(exe) ~= 1 then
    set_status('error', exe .. ' not found')
    notify(('cannot start the server: %q is not executable. Install coda-lsp (pip install -e . in the repo) '
      .. 'or pass setup{ server_path = ... } / setup{ python = ... }'):format(exe), vim.log.levels.ERROR)
    return
  end
  vim.lsp.config(M.name, M.lsp_config())
  for _, c in ipairs(M.clients()) do -- a running server gets the new settings
    c:notify('workspace/didChangeConfiguration', { settings = config.server_options(cfg) })
  end
  vim.lsp.enable(M.name)
end

--- Set the server settings at run time (workspace/didChangeConfiguration), e.g. configure{ steps = 8 }.
--- The table is the whole set, like an editor's settings section: a server setting it leaves out
--- (one that setup or an earlier configure set) goes back to the server's default.
function M.configure(opts)
  local cfg = config.section(opts)
  partial.enabled = M.enabled and cfg.streaming ~= false
  for _, c in ipairs(M.clients()) do
    c:notify('workspace/didChangeConfiguration', { settings = config.server_options(cfg) })
  end
end

--- Turn inline completion on or off everywhere (`:CodaToggle`).
function M.toggle(on)
  if on == nil then
    on = not M.enabled
  end
  M.enabled = on
  partial.enabled = on and config.current.streaming ~= false
  for _, c in ipairs(M.clients()) do
    for bufnr in pairs(c.attached_buffers) do
      enable_inline(bufnr, c.id, on)
      if not on then
        partial.clear(bufnr, 'moved')
      end
    end
  end
  pcall(vim.cmd.redrawstatus)
  return on
end

--- Fill (rewrite) a range of the current buffer; see coda.fill.
function M.fill(range, bufnr)
  return require('coda.fill').run(M, range, bufnr)
end

--- For the statusline: `%{v:lua.require'coda'.statusline()}`.
function M.statusline()
  if not M.enabled then
    return 'CoDA: off'
  end
  local s = M.status
  local text = 'CoDA: ' .. (s.state or '?')
  if s.state == 'loading' and s.progress then
    text = text .. ' ' .. s.progress
  end
  return text
end

return M
