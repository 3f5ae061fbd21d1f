--- Ghost text for Neovim 0.11, which has no vim.lsp.inline_completion: request
--- `textDocument/inlineCompletion` after typing (debounced), draw the first item as virtual text,
--- accept all of it, its next word or its next line (coda.accept's rules), cycle through the items
--- (an invoked request gives several). On 0.12 Neovim's own implementation is used instead.
local M = {}
local api = vim.api
M.ns = api.nvim_create_namespace('coda.ghost')
---@type table<integer, {client_id: integer, on: boolean, timer: uv.uv_timer_t?, item: table?, req: integer?, items: table?, index: integer?}>
local state = {}

local function hide(bufnr)
  local s = state[bufnr]
  if s then
    s.item = nil
  end
  if api.nvim_buf_is_valid(bufnr) then
    api.nvim_buf_clear_namespace(bufnr, M.ns, 0, -1)
  end
end

local function show(bufnr, client, item)
  hide(bufnr)
  local text = type(item.insertText) == 'table' and item.insertText.value or item.insertText or ''
  local row, col = unpack(api.nvim_win_get_cursor(0))
  row = row - 1
  local start_col = col
  if item.range then
    local line = api.nvim_buf_get_lines(bufnr, item.range.start.line, item.range.start.line + 1, false)[1] or ''
    start_col = vim.str_byteindex(line, client.offset_encoding, item.range.start.character, false)
  end
  local lines = vim.split(text, '\n', { plain = true })
  local first = lines[1]:sub(math.max(0, col - start_col) + 1)
  local vl = {}
  for i = 2, #lines do
    vl[#vl + 1] = { { lines[i], 'CodaPartial' } }
  end
  api.nvim_buf_set_extmark(bufnr, M.ns, row, col, { virt_text = { { first, 'CodaPartial' } },
    virt_text_pos = 'inline', virt_lines = #vl > 0 and vl or nil, hl_mode = 'combine' })
  state[bufnr].item = { text = text, row = row, start_col = start_col, end_ = item.range and item.range['end'],
    command = item.command }
end

local function request(bufnr, invoked, on_items)
  local s = state[bufnr]
  local client = s and vim.lsp.get_client_by_id(s.client_id)
  if not client or not s.on or api.nvim_get_current_buf() ~= bufnr or not api.nvim_get_mode().mode:match('^i') then
    return
  end
  if s.req then
    client:cancel_request(s.req)
  end
  local params = vim.lsp.util.make_position_params(0, client.offset_encoding)
  params.context = { triggerKind = invoked and 1 or 2 }
  local tick = api.nvim_buf_get_changedtick(bufnr)
  local _, id = client:request('textDocument/inlineCompletion', params, function(err, result)
    s.req = nil
    if err or not result or api.nvim_buf_get_changedtick(bufnr) ~= tick then
      return
    end
    local items = result.items or result
    s.items, s.index = items, 1
    if on_items then
      return on_items(client, items)
    end
    if items[1] then
      show(bufnr, client, items[1])
    end
  end, bufnr)
  s.req = id
end

function M.enable(bufnr, client_id, on)
  state[bufnr] = state[bufnr] or { client_id = client_id }
  state[bufnr].on = on
  if not on then
    return hide(bufnr)
  end
  local group = api.nvim_create_augroup('coda.ghost.' .. bufnr, { clear = true })
  api.nvim_create_autocmd({ 'InsertEnter', 'TextChangedI', 'CursorMovedI' }, { group = group, buffer = bufnr,
    callback = function()
      hide(bufnr)
      local s = state[bufnr]
      if s.timer then
        s.timer:stop()
        s.timer:close()
      end
      s.timer = vim.defer_fn(function()
        s.timer = nil
        request(bufnr)
      end, 150)
    end })
  api.nvim_create_autocmd('InsertLeave', { group = group, buffer = bufnr, callback = function()
    hide(bufnr)
  end })
end

function M.dismiss(bufnr)
  hide(bufnr)
end

--- Show the next (count > 0) or previous candidate; with one item, ask for several first.
function M.cycle(bufnr, count)
  local s = state[bufnr]
  if not s or not s.item then
    return false
  end
  local function step(client, items)
    local n = #items
    for k = 1, n do -- the next candidate whose text differs from the one shown
      local index = ((s.index or 1) - 1 + k * count) % n + 1
      if items[index].insertText ~= s.item.text or k == n then
        s.index = index
        return show(bufnr, client, items[index])
      end
    end
  end
  if s.items and #s.items > 1 then
    step(vim.lsp.get_client_by_id(s.client_id), s.items)
  else
    local shown = s.item
    request(bufnr, true, function(client, items)
      s.item = shown
      if #items > 0 then
        step(client, items)
      end
    end)
  end
  return true
end

--- Accept all of the ghost text, or its next word / line (`kind`); false when none is shown.
---@param kind? 'word'|'line'|'all'
function M.accept(bufnr, kind)
  local s = state[bufnr]
  local item = s and s.item
  if not item then
    return false
  end
  local accept = require('coda.accept')
  vim.schedule(function()
    hide(bufnr)
    local client = vim.lsp.get_client_by_id(s.client_id)
    local it = { text = item.text, row = item.row, col = item.start_col, id = accept.item_id(item.command) }
    if not accept.take(bufnr, client, it, kind or 'all') then
      return
    end
    local row, col = unpack(api.nvim_win_get_cursor(0))
    local end_row, end_col = row - 1, col
    if item.end_ then
      local line = api.nvim_buf_get_lines(bufnr, item.end_.line, item.end_.line + 1, false)[1] or ''
      end_row = item.end_.line
      end_col = vim.str_byteindex(line, client and client.offset_encoding or 'utf-16', item.end_.character, false)
    end
    local lines = vim.split(item.text, '\n', { plain = true })
    api.nvim_buf_set_text(bufnr, item.row, item.start_col, end_row, math.max(end_col, col), lines)
    api.nvim_win_set_cursor(0, { item.row + #lines, (#lines == 1 and item.start_col or 0) + #lines[#lines] })
    if item.command and client then
      client:exec_cmd(item.command, { bufnr = bufnr })
    end
  end)
  return true
end

return M
