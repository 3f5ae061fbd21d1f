--- Next-edit suggestions (`coda/nextEdit`): after an edit, the edit it implies elsewhere, drawn at its place.
---
--- A request goes out after a settled edit (TextChanged in normal mode, InsertLeave; the server adds its
--- own nextEditDebounceMs) or on :CodaNextEdit. The first edit of the answer is drawn where it applies:
--- the old text marked (CodaNextEditOld), the new text as inline virtual text after it, or as virtual
--- lines when it has several lines. <Tab> in normal mode (and in insert mode when no ghost text is shown,
--- as sidekick.nvim does) jumps to the edit, a second <Tab> applies it; the dismiss key drops it. An answer
--- for a buffer version that has moved on is never drawn, and a drawn edit goes when the buffer changes.
local M = {}
local api = vim.api

M.ns = api.nvim_create_namespace('coda.next_edit')
---@type table<integer, {edit: table, client_id: integer, version: integer}>
M.shown = {}
M.seq = {}    --- per buffer: the latest request's number (older answers are dropped)

local function config()
  return require('coda.config').current
end

function M.setup_highlights()
  api.nvim_set_hl(0, 'CodaNextEditOld', { default = true, link = 'DiffDelete' })
  api.nvim_set_hl(0, 'CodaNextEditNew', { default = true, link = 'DiffAdd' })
end

local function version_of(bufnr)
  return vim.lsp.util.buf_versions[bufnr] or 0
end

--- Remove what is drawn for `bufnr` (no server call).
function M.clear(bufnr)
  api.nvim_buf_clear_namespace(bufnr, M.ns, 0, -1)
  M.shown[bufnr] = nil
end

local function byte_pos(bufnr, pos, enc)
  local line = api.nvim_buf_get_lines(bufnr, pos.line, pos.line + 1, false)[1] or ''
  local ok, col = pcall(vim.str_byteindex, line, enc, pos.character, false)
  return pos.line, ok and col or #line
end

local function draw(bufnr, edit, enc)
  local srow, scol = byte_pos(bufnr, edit.range.start, enc)
  local erow, ecol = byte_pos(bufnr, edit.range['end'], enc)
  if srow ~= erow or scol ~= ecol then
    api.nvim_buf_set_extmark(bufnr, M.ns, srow, scol, { end_row = erow, end_col = ecol, hl_group = 'CodaNextEditOld' })
  end
  local lines = vim.split(edit.text, '\n', { plain = true })
  local opts = { virt_text = { { lines[1] ~= '' and lines[1] or '⌫', 'CodaNextEditNew' } }, virt_text_pos = 'inline' }
  if #lines > 1 then
    opts.virt_lines = {}
    for i = 2, #lines do
      opts.virt_lines[#opts.virt_lines + 1] = { { lines[i], 'CodaNextEditNew' } }
    end
  end
  api.nvim_buf_set_extmark(bufnr, M.ns, erow, ecol, opts)
end

--- Ask the server for the next edit at the cursor; `invoked` = the user asked (manual mode answers only these).
function M.request(bufnr, invoked)
  bufnr = bufnr or api.nvim_get_current_buf()
  local mode = config().next_edit
  if mode == 'off' or (mode == 'manual' and not invoked) then
    return false
  end
  local client = require('coda').clients(bufnr)[1]
  if not client then
    return false
  end
  local win = vim.fn.bufwinid(bufnr)
  local params = vim.lsp.util.make_position_params(win ~= -1 and win or 0, client.offset_encoding)
  local version = version_of(bufnr)
  params.textDocument.version = version
  params.invoked = invoked or nil
  M.seq[bufnr] = (M.seq[bufnr] or 0) + 1
  local seq = M.seq[bufnr]
  client:request('coda/nextEdit', params, function(err, result)
    if err or seq ~= M.seq[bufnr] or not api.nvim_buf_is_valid(bufnr) then
      return
    end
    local edit = type(result) == 'table' and result.edits and result.edits[1]
    -- never draw an edit made for another version of the buffer
    if not edit or (edit.textDocument and edit.textDocument.version ~= version_of(bufnr)) then
      M.clear(bufnr)
      return
    end
    M.clear(bufnr)
    draw(bufnr, edit, client.offset_encoding)
    M.shown[bufnr] = { edit = edit, client_id = client.id, version = version_of(bufnr) }
    api.nvim_exec_autocmds('User', { pattern = 'CodaNextEdit', modeline = false, data = { edit = edit } })
  end, bufnr)
  return true
end

local function current(bufnr)
  local s = M.shown[bufnr]
  if s and s.version ~= version_of(bufnr) then -- the buffer changed under it
    M.clear(bufnr)
    return nil
  end
  return s
end

--- The edit shown for `bufnr` (nil when none, or the buffer changed under it).
function M.current_edit(bufnr)
  local s = current(bufnr)
  return s and s.edit
end

--- Move the cursor to the shown edit; true when there was one.
function M.jump(bufnr)
  bufnr = bufnr or api.nvim_get_current_buf()
  local s = current(bufnr)
  if not s then
    return false
  end
  local client = vim.lsp.get_client_by_id(s.client_id)
  local row, col = byte_pos(bufnr, s.edit.range.start, client and client.offset_encoding or 'utf-16')
  api.nvim_win_set_cursor(0, { row + 1, col })
  return true
end

--- Apply the shown edit (and tell the server, for its local statistics); true when there was one.
function M.accept(bufnr)
  bufnr = bufnr or api.nvim_get_current_buf()
  local s = current(bufnr)
  if not s then
    return false
  end
  local client = vim.lsp.get_client_by_id(s.client_id)
  M.clear(bufnr)
  local enc = client and client.offset_encoding or 'utf-16'
  vim.lsp.util.apply_text_edits({ { range = s.edit.range, newText = s.edit.text } }, bufnr, enc)
  if client and s.edit.command then
    client:exec_cmd(s.edit.command, { bufnr = bufnr })
  end
  return true
end

--- Jump to the edit when the cursor is elsewhere, apply it when the cursor is on it (sidekick's
--- nes_jump_or_apply); false when no edit is shown.
function M.jump_or_apply(bufnr)
  bufnr = bufnr or api.nvim_get_current_buf()
  local s = current(bufnr)
  if not s then
    return false
  end
  local client = vim.lsp.get_client_by_id(s.client_id)
  local row, col = byte_pos(bufnr, s.edit.range.start, client and client.offset_encoding or 'utf-16')
  local cur = api.nvim_win_get_cursor(0)
  if cur[1] - 1 == row and cur[2] == col then
    return M.accept(bufnr)
  end
  return M.jump(bufnr)
end

--- Drop the shown edit and tell the server it was rejected.
function M.dismiss(bufnr)
  bufnr = bufnr or api.nvim_get_current_buf()
  local s = current(bufnr)
  if not s then
    return false
  end
  M.clear(bufnr)
  local client = vim.lsp.get_client_by_id(s.client_id)
  local sid = s.edit.command and s.edit.command.arguments and s.edit.command.arguments[1]
  if client and sid then
    client:exec_cmd({ title = 'coda next edit rejected', command = 'coda.rejected', arguments = { sid } },
      { bufnr = bufnr })
  end
  return true
end

--- Buffer-local autocmds and normal-mode keys (keymaps.next_edit_* in the config; false disables one).
function M.attach(bufnr)
  local group = api.nvim_create_augroup('coda.next_edit.' .. bufnr, { clear = true })
  api.nvim_create_autocmd({ 'TextChanged', 'InsertLeave' }, { group = group, buffer = bufnr, callback = function()
    if M.shown[bufnr] and M.shown[bufnr].version ~= version_of(bufnr) then
      M.clear(bufnr)
    end
    M.request(bufnr, false)
  end })
  api.nvim_create_autocmd('TextChangedI', { group = group, buffer = bufnr, callback = function()
    if M.shown[bufnr] then
      M.clear(bufnr)
    end
  end })
  local km = config().keymaps or {}
  local function nmap(lhs, fn, desc)
    if lhs then -- not an expr mapping: applying an edit or moving the cursor is not allowed in one
      vim.keymap.set('n', lhs, function()
        if not fn(bufnr) then
          api.nvim_feedkeys(api.nvim_replace_termcodes(lhs, true, false, true), 'n', false)
        end
      end, { buffer = bufnr, desc = 'coda: ' .. desc })
    end
  end
  nmap(km.next_edit_accept, M.jump_or_apply, 'jump to the next edit, or apply it when on it')
  nmap(km.next_edit_jump, M.jump, 'jump to the next edit')
  nmap(km.next_edit_dismiss, M.dismiss, 'dismiss the next edit')
end

return M
