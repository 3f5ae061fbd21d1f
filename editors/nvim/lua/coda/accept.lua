--- Accepting ghost text: all of it, the next word or the next line, what is still streaming, and
--- cycling through candidates. Neovim 0.12 goes through `vim.lsp.inline_completion.get{ on_accept }`,
--- 0.11 through the plugin's fallback client (coda.fallback), with the same splitting rules.
---
--- After a partial accept the rest stays shown: the edit moves the cursor, the client asks again, and
--- the server answers from its type-through cache (the rest of the same item, no model run).
--- Every accept reports to the server's `coda.accepted` command (local statistics): a whole item
--- with its id, a partial one with the number of characters taken.
local M = {}
local api = vim.api

--- The part of `text` an accept of `kind` takes: 'word' = leading blanks and the next word (letters,
--- digits, _ and non-ASCII characters) or run of punctuation; 'line' = through the end of the first line (with its newline when more follows).
---@param text string
---@param kind 'word'|'line'|'all'
---@return string
function M.split(text, kind)
  if kind == 'line' then
    local nl = text:find('\n', 1, true)
    if nl == 1 then -- the suggestion starts a new line: take it and the line after it
      local nl2 = text:find('\n', 2, true)
      return nl2 and text:sub(1, nl2) or text
    end
    return nl and text:sub(1, nl) or text
  elseif kind == 'word' then
    local ws = text:match('^%s*')
    local rest = text:sub(#ws + 1)
    -- letters, digits, _ and any non-ASCII character form words; other runs of punctuation are one
    return ws .. (rest:match('^[%w_\128-\255]+') or rest:match('^[^%w_%s\128-\255]+') or '')
  end
  return text
end

--- The id the server put on an item (its `coda.accepted` command), if any.
function M.item_id(command)
  return type(command) == 'table' and command.command == 'coda.accepted' and type(command.arguments) == 'table'
    and command.arguments[1] or nil
end

--- Tell the server (local statistics) that `chars` characters of item `id` were accepted (nil = all).
function M.report(client, id, chars, bufnr)
  if client and id then
    client:exec_cmd({ title = 'coda accepted', command = 'coda.accepted', arguments = { id, chars } }, { bufnr = bufnr })
  end
end

--- Insert `text` at the cursor and put the cursor after it.
function M.insert_at_cursor(bufnr, text)
  local win = vim.fn.bufwinid(bufnr)
  local row, col = unpack(api.nvim_win_get_cursor(win))
  local lines = vim.split(text, '\n', { plain = true })
  api.nvim_buf_set_text(bufnr, row - 1, col, row - 1, col, lines)
  api.nvim_win_set_cursor(win, { row + #lines - 1, (#lines == 1 and col or 0) + #lines[#lines] })
end

--- What of `text` (which starts at byte `start_col` of the cursor row) the user has not typed yet.
local function untyped(bufnr, text, start_row, start_col)
  local row, col = unpack(api.nvim_win_get_cursor(vim.fn.bufwinid(bufnr)))
  if row - 1 ~= start_row or col <= start_col then
    return text
  end
  local typed = api.nvim_buf_get_lines(bufnr, start_row, start_row + 1, false)[1]:sub(start_col + 1, col)
  return vim.startswith(text, typed) and text:sub(#typed + 1) or text
end

--- Take the `kind` part of an item; true when it took all of it (the caller then applies the item whole).
---@return boolean whole
function M.take(bufnr, client, item, kind)
  local rest = untyped(bufnr, item.text, item.row, item.col)
  local head = M.split(rest, kind)
  if kind == 'all' or #head >= #rest then
    return true
  end
  M.insert_at_cursor(bufnr, head)
  M.report(client, item.id, vim.fn.strchars(head), bufnr)
  return false
end

--- The built-in completor of `bufnr` (Neovim 0.12's private state, guarded: nil when it moved).
local function completor_of(bufnr)
  local ok, cap = pcall(require, 'vim.lsp._capability')
  return ok and cap.all and cap.all.inline_completion and cap.all.inline_completion.active[bufnr] or nil
end

--- Neovim 0.12: accept through vim.lsp.inline_completion.get with an on_accept hook.
--- `get` reads the completor's item only when its scheduled callback runs, so an item that lands
--- between the key press and then would be taken (and reported) instead of the one on screen: the
--- item shown at the key press is kept here and accepted whatever arrived since.
---@param kind 'word'|'line'|'all'
---@return boolean accepted
function M.inline(bufnr, kind)
  local completor = completor_of(bufnr)
  local shown = completor and completor.current -- `select` makes a new table per item: this one stays as shown
  return vim.lsp.inline_completion.get({ bufnr = bufnr, on_accept = function(item)
    item = shown or item
    local client = vim.lsp.get_client_by_id(item.client_id)
    local text = type(item.insert_text) == 'string' and item.insert_text or item.insert_text.value
    local r = item.range
    local cur = api.nvim_win_get_cursor(vim.fn.bufwinid(bufnr))
    local it = { text = text, row = r and r.start.row or cur[1] - 1, col = r and r.start.col or cur[2],
      id = M.item_id(item.command) }
    if not M.take(bufnr, client, it, kind) then
      return
    end
    local lines = vim.split(text, '\n', { plain = true })
    if r then
      api.nvim_buf_set_text(bufnr, r.start.row, r.start.col, r.end_.row, r.end_.col, lines)
      api.nvim_win_set_cursor(vim.fn.bufwinid(bufnr), { r.start.row + #lines, (#lines == 1 and r.start.col or 0)
        + #lines[#lines] })
    else
      api.nvim_paste(text, false, 0)
    end
    if item.command and client then
      client:exec_cmd(item.command, { bufnr = bufnr })
    end
  end })
end

--- Neovim 0.12: the next/previous candidate. With one item shown, ask the server for several
--- (an invoked request) and show the next of them. Uses the built-in completor's state (private API,
--- guarded): Neovim offers `select` but no way to invoke a request.
function M.cycle_inline(bufnr, count, client)
  local completor = completor_of(bufnr)
  if not completor or completor:count_items() > 1 or not client then
    return vim.lsp.inline_completion.select({ bufnr = bufnr, count = count })
  end
  local params = vim.lsp.util.make_position_params(0, client.offset_encoding)
  params.context = { triggerKind = 1 } -- Invoked: the server returns several candidates
  local tick = api.nvim_buf_get_changedtick(bufnr)
  client:request('textDocument/inlineCompletion', params, function(err, result)
    if err or not result or api.nvim_buf_get_changedtick(bufnr) ~= tick or not completor.client_state[client.id] then
      return
    end
    local shown = completor.current and completor.current.insert_text
    local items = result.items or result
    completor.client_state[client.id].items = items
    local n = completor:count_items()
    for k = 1, n do -- the next (or previous) candidate that differs from what was shown
      local index = (k * count) % n + 1
      local _, item = completor:get_item(index)
      if item and item.insertText ~= shown or k == n then
        return completor:select(index, true)
      end
    end
  end, bufnr)
end

return M
