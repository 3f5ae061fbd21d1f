--- :CodaFill: rewrite a selection through the server's `coda.fillSelection` command.
---
--- The server streams `coda/partialCompletion` for the selection (drawn under it by coda.partial),
--- then sends one `workspace/applyEdit` that Neovim applies; the command's result says whether it
--- was applied and why not. `User CodaFillDone` fires with that result (data) when it ends.
local M = {}
local api = vim.api

--- {start={row,col}, end_={row,col}} (0-based rows, byte columns, end exclusive) for a command call.
---@param a table the argument of a user command with range = true
function M.range_from_command(a)
  local bufnr = api.nvim_get_current_buf()
  local mode = vim.fn.visualmode()
  local s, e = vim.fn.getpos("'<"), vim.fn.getpos("'>")
  local last = function(row)
    return #(api.nvim_buf_get_lines(bufnr, row, row + 1, false)[1] or '')
  end
  if a.range == 2 and mode == 'v' and s[2] == a.line1 and e[2] == a.line2 then
    local erow = e[2] - 1
    local line = api.nvim_buf_get_lines(bufnr, erow, erow + 1, false)[1] or ''
    local ecol = math.min(e[3], #line) -- '> is inclusive: step over the whole last character
    if ecol > 0 and ecol <= #line then
      ecol = ecol - 1 + #vim.fn.strcharpart(line:sub(ecol), 0, 1)
    end
    return { start = { s[2] - 1, s[3] - 1 }, end_ = { erow, math.min(ecol, #line) } }
  end
  -- linewise (V, or :N,MCodaFill): whole lines, without the final newline
  return { start = { a.line1 - 1, 0 }, end_ = { a.line2 - 1, last(a.line2 - 1) } }
end

local function lsp_pos(bufnr, row, col, encoding)
  local line = api.nvim_buf_get_lines(bufnr, row, row + 1, false)[1] or ''
  return { line = row, character = vim.str_utfindex(line, encoding or 'utf-16', math.min(col, #line), false) }
end

function M.run(coda, range, bufnr)
  bufnr = bufnr or api.nvim_get_current_buf()
  local client = coda.clients(bufnr)[1]
  local function done(result)
    api.nvim_exec_autocmds('User', { pattern = 'CodaFillDone', modeline = false, data = result })
  end
  if not client then
    vim.notify('coda: no coda-lsp attached to this buffer (see :CodaStatus, :checkhealth coda)', vim.log.levels.WARN)
    return done({ applied = false, reason = 'no client' })
  end
  if range.start[1] == range.end_[1] and range.start[2] == range.end_[2] then
    vim.notify('coda: :CodaFill needs a selection (visual mode, then :CodaFill)', vim.log.levels.WARN)
    return done({ applied = false, reason = 'empty selection' })
  end
  local enc = client.offset_encoding
  local arg = {
    uri = vim.uri_from_bufnr(bufnr),
    range = { start = lsp_pos(bufnr, range.start[1], range.start[2], enc),
              ['end'] = lsp_pos(bufnr, range.end_[1], range.end_[2], enc) },
  }
  client:request('workspace/executeCommand', { command = 'coda.fillSelection', arguments = { arg } },
    function(err, result)
      require('coda.partial').clear(bufnr, 'done')
      if err then
        vim.notify('coda: fill failed: ' .. (err.message or vim.inspect(err)), vim.log.levels.ERROR)
        return done({ applied = false, reason = err.message })
      end
      result = type(result) == 'table' and result or { applied = false, reason = 'no result' }
      if not result.applied then
        vim.notify('coda: nothing filled: ' .. tostring(result.reason or 'the editor refused the edit'), vim.log.levels.WARN)
      end
      done(result)
    end, bufnr)
end

return M
