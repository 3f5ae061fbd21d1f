--- Draws `coda/partialCompletion` notifications as virtual text that updates at every denoising step.
---
--- The server sends one notification per step (text so far, still-masked spans left out) before the
--- final response; the final one has `done = true`. For a completion at the cursor the text is drawn
--- inline where it would be inserted (extra lines as virt_lines), as <Tab> would take it: the
--- confident prefix (`prefix`: what Tab inserts while it streams) in `CodaPartial`, the rest decoded so
--- far, which Tab would not take, dimmed (`CodaPartialPending`); for a fill of a selection it is
--- drawn as virt_lines under the selection, so the code being replaced stays readable. The drawing
--- is cleared on the final notification (the final item is then shown by vim.lsp.inline_completion,
--- or applied by the fill), when the buffer changes under it, or when the cursor moves away.
--- Every draw/clear fires `User CodaPartial` (data = {bufnr, text, step, steps, done, kind}),
--- which statuslines and the end-to-end tests listen to.
local M = {}

local api = vim.api
M.ns = api.nvim_create_namespace('coda.partial')

---@type table<integer, {key: string, cursor: integer[], text: string, prefix: string, is_fill: boolean, step: integer, steps: integer}>
local drawn = {}
---@type table<integer, string> bufnr -> key of a request whose drawing the user moved away from
local dismissed = {}
M.enabled = true

local function fire(data)
  api.nvim_exec_autocmds('User', { pattern = 'CodaPartial', modeline = false, data = data })
end

--- UTF-16 (or the client's encoding) position -> 0-based row, byte column.
local function to_byte(bufnr, pos, encoding)
  local line = api.nvim_buf_get_lines(bufnr, pos.line, pos.line + 1, false)[1]
  if not line then
    return nil
  end
  local ok, col = pcall(vim.str_byteindex, line, encoding or 'utf-16', pos.character, false)
  return pos.line, ok and col or #line
end

---@param bufnr integer
function M.clear(bufnr, reason)
  if not api.nvim_buf_is_valid(bufnr) then
    return
  end
  api.nvim_buf_clear_namespace(bufnr, M.ns, 0, -1)
  local d = drawn[bufnr]
  if d then
    drawn[bufnr] = nil
    if reason == 'moved' then
      dismissed[bufnr] = d.key
    end
    fire({ bufnr = bufnr, text = '', step = d.step, steps = d.steps, done = true, reason = reason })
  end
end

--- {text, hl} pieces -> one list of chunks per line (the pieces split at their newlines).
---@param pieces {[1]: string, [2]: string}[]
---@return {[1]: string, [2]: string}[][]
function M.chunks(pieces)
  local out = { {} }
  for _, piece in ipairs(pieces) do
    for i, s in ipairs(vim.split(piece[1], '\n', { plain = true })) do
      if i > 1 then
        out[#out + 1] = {}
      end
      if s ~= '' then
        table.insert(out[#out], { s, piece[2] })
      end
    end
  end
  return out
end

local function draw(bufnr, params, encoding)
  local r = params.range
  local row, col = to_byte(bufnr, r.start, encoding)
  if not row then
    return
  end
  local is_fill = r.start.line ~= r['end'].line or r.start.character ~= r['end'].character
  local lines = vim.split(params.text or '', '\n', { plain = true })
  local hl = 'CodaPartial'
  local mark = { hl_mode = 'combine', priority = 200 }
  if is_fill then
    local vl = {}
    for i, s in ipairs(lines) do
      vl[i] = { { (i == 1 and '▎coda ' or '▎     ') .. s, hl } }
    end
    table.insert(vl[1], { ('  [%d/%d]'):format(params.step or 0, params.steps or 0), 'CodaPartialStep' })
    mark.virt_lines = vl
    row = math.min(r['end'].line, api.nvim_buf_line_count(bufnr) - 1)
    col = 0
  else
    local text, prefix = params.text or '', type(params.prefix) == 'string' and params.prefix or ''
    if not vim.startswith(text, prefix) then
      text = prefix
    end
    local chunks = M.chunks({ { prefix, hl }, { text:sub(#prefix + 1), 'CodaPartialPending' } })
    mark.virt_text = chunks[1]
    mark.virt_text_pos = 'inline'
    if #chunks > 1 then
      mark.virt_lines = vim.list_slice(chunks, 2)
    end
  end
  api.nvim_buf_clear_namespace(bufnr, M.ns, 0, -1)
  pcall(api.nvim_buf_set_extmark, bufnr, M.ns, row, col, mark)
end

--- Handler for `coda/partialCompletion` (registered in the client config).
function M.handler(_, params, ctx)
  if type(params) ~= 'table' or type(params.uri) ~= 'string' or not params.range then
    return
  end
  local bufnr = vim.uri_to_bufnr(params.uri)
  if not api.nvim_buf_is_loaded(bufnr) then
    return
  end
  local key = ('%s:%d:%d'):format(tostring(params.version), params.range.start.line, params.range.start.character)
  if params.done then
    M.clear(bufnr, 'done')
    return
  end
  if not M.enabled or dismissed[bufnr] == key then
    return
  end
  -- a notification for an older version of the buffer is stale: the text moved under it
  local version = vim.lsp.util.buf_versions[bufnr]
  if params.version ~= nil and params.version ~= vim.NIL and version and params.version ~= version then
    return
  end
  local client = ctx and vim.lsp.get_client_by_id(ctx.client_id)
  draw(bufnr, params, client and client.offset_encoding)
  local win = vim.fn.bufwinid(bufnr)
  drawn[bufnr] = {
    key = key,
    cursor = win ~= -1 and api.nvim_win_get_cursor(win) or { 0, 0 },
    text = params.text or '',
    prefix = type(params.prefix) == 'string' and params.prefix or '',
    is_fill = params.range.start.line ~= params.range['end'].line
      or params.range.start.character ~= params.range['end'].character,
    step = params.step or 0,
    steps = params.steps or 0,
  }
  fire({
    bufnr = bufnr,
    text = params.text or '',
    step = params.step,
    steps = params.steps,
    done = false,
    masked = params.maskedCount,
    prefix = drawn[bufnr].prefix,
  })
end

--- The confident prefix decoded so far of the completion drawn at the cursor (`prefix` of the last
--- notification: the text before the first still-masked token, cut by the server's confidence gate),
--- or nil when nothing is drawn there. <Tab> accepts it while the text still streams.
function M.prefix(bufnr)
  local d = drawn[bufnr]
  local win = vim.fn.bufwinid(bufnr)
  if not d or d.is_fill or win == -1 then
    return nil
  end
  local c = api.nvim_win_get_cursor(win)
  return (c[1] == d.cursor[1] and c[2] == d.cursor[2]) and d.prefix or nil
end

--- Clear on cursor movement / leaving insert mode / leaving the buffer.
function M.attach(bufnr)
  local group = api.nvim_create_augroup('coda.partial.' .. bufnr, { clear = true })
  api.nvim_create_autocmd({ 'CursorMoved', 'CursorMovedI' }, {
    group = group,
    buffer = bufnr,
    callback = function()
      local d = drawn[bufnr]
      if d then
        local c = api.nvim_win_get_cursor(0)
        if c[1] ~= d.cursor[1] or c[2] ~= d.cursor[2] then
          M.clear(bufnr, 'moved')
        end
      end
    end,
  })
  api.nvim_create_autocmd({ 'InsertLeave', 'BufLeave' }, {
    group = group,
    buffer = bufnr,
    callback = function()
      if drawn[bufnr] then
        M.clear(bufnr, 'moved')
      end
    end,
  })
  api.nvim_create_autocmd('TextChanged', {
    group = group,
    buffer = bufnr,
    callback = function()
      dismissed[bufnr] = nil
    end,
  })
  api.nvim_create_autocmd('TextChangedI', {
    group = group,
    buffer = bufnr,
    callback = function()
      dismissed[bufnr] = nil
    end,
  })
end

function M.setup_highlights()
  local base = vim.fn.hlexists('ComplHint') == 1 and 'ComplHint' or 'Comment'
  api.nvim_set_hl(0, 'CodaPartial', { default = true, link = base })
  api.nvim_set_hl(0, 'CodaPartialStep', { default = true, link = 'NonText' })
  api.nvim_set_hl(0, 'CodaPartialPending', { default = true, link = 'NonText' })
end

return M
