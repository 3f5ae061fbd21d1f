--- User commands: :CodaFill (range), :CodaToggle, :CodaStatus, :CodaRestart.
local M = {}

function M.create(coda)
  local api = vim.api
  api.nvim_create_user_command('CodaFill', function(a)
    coda.fill(require('coda.fill').range_from_command(a))
  end, { range = true, desc = 'coda: rewrite the selected code with the model' })

  api.nvim_create_user_command('CodaNextEdit', function()
    require('coda.next_edit').request(nil, true)
  end, { desc = 'coda: ask for the next edit at the cursor (also in nextEdit = manual)' })

  api.nvim_create_user_command('CodaToggle', function()
    local on = coda.toggle()
    vim.notify('coda: inline completion ' .. (on and 'on' or 'off'))
  end, { desc = 'coda: turn inline completion on/off' })

  api.nvim_create_user_command('CodaStatus', function()
    local s = coda.status
    local clients = coda.clients()
    local lines = {
      ('coda: %s%s'):format(s.state, s.message and (' (' .. s.message .. ')') or ''),
      ('inline completion %s, %d client(s)'):format(coda.enabled and 'on' or 'off', #clients),
      'command: ' .. table.concat(require('coda.config').cmd(), ' '),
    }
    if coda.last_exit then
      lines[#lines + 1] = ('last exit: code %d signal %d after %.1f s'):format(
        coda.last_exit.code, coda.last_exit.signal, coda.last_exit.after_s)
    end
    vim.notify(table.concat(lines, '\n'))
  end, { desc = 'coda: show the server state' })

  api.nvim_create_user_command('CodaRestart', function()
    for _, c in ipairs(coda.clients()) do
      c:stop(true)
    end
    vim.defer_fn(function()
      vim.lsp.enable(coda.name, false)
      vim.lsp.enable(coda.name, true)
    end, 500)
  end, { desc = 'coda: restart the server' })
end

return M
