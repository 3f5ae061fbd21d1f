-- The plugin's settings module in the real Neovim runtime, no server: what setup{} and configure{}
-- would send. nvim --headless --clean -l tests/e2e/nvim_config.lua (env CODA_PLUGIN_DIR, CODA_RESULT)
vim.opt.rtp:prepend(os.getenv('CODA_PLUGIN_DIR'))
local config = require('coda.config')
local out = {}
config.merge({ steps = 8, min_confidence = 0, keymaps = { accept = '<C-y>' } })
out.setup = config.server_options()
config.section({ steps = 4, max_tokens = 12 })
out.configured = config.server_options()
config.section({ max_tokens = 12 })
out.removed = config.server_options()
out.keymap_kept = config.current.keymaps.accept
local f = assert(io.open(os.getenv('CODA_RESULT'), 'w'))
f:write(vim.json.encode(out))
f:close()
