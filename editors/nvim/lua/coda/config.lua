--- Settings of the coda plugin: defaults, validation, and the mapping to the server's
--- initializationOptions (camelCase keys that coda_lsp/options.py reads).
local M = {}

---@class coda.Config
M.defaults = {
  --- Command that starts the server. nil: built from `server_path` / `python` below.
  cmd = nil, ---@type string[]?
  server_path = 'coda-lsp', --- executable on PATH (or a full path)
  python = nil, ---@type string? run coda_lsp's CLI with this interpreter instead of `server_path`
  server_args = {}, ---@type string[] extra arguments, e.g. { '--log-file', '/tmp/coda.log' }
  filetypes = nil, ---@type string[]? nil = every filetype with a file name
  root_markers = { '.git', 'pyproject.toml', 'package.json', 'Cargo.toml', 'go.mod' },
  enabled = true, --- inline completion on at start (`:CodaToggle` flips it)
  keymaps = { --- insert mode; false disables one
    accept = '<Tab>', --- accept the ghost text, or what is shown while it streams (else a normal <Tab>)
    accept_word = '<M-Right>', --- accept the next word of the ghost text; the rest stays shown
    accept_line = '<M-Down>', --- accept the next line of the ghost text; the rest stays shown
    next = '<M-]>', --- next candidate (asks the server for several)
    prev = '<M-[>', --- previous candidate
    dismiss = '<C-]>', --- hide the ghost text
    -- normal mode: the next edit (coda/nextEdit) drawn where it applies
    next_edit_accept = '<Tab>', --- jump to the next edit, apply it when already on it (also insert <Tab> without ghost text)
    next_edit_jump = false, --- only jump to it (e.g. '<M-n>')
    next_edit_dismiss = '<Esc>', --- drop it (the server records it as rejected)
  },
  -- server settings (sent as initializationOptions and on `require('coda').configure{...}`)
  model_path = nil, ---@type string? CoDA model directory; nil = the embedded default model
  device = nil, ---@type string? auto | cpu | cuda | mps
  dtype = nil, ---@type string? auto | float32 | bfloat16 (server default auto: measured at load)
  quantize = nil, ---@type string? auto | none | int8 (server default auto: int8 where measured fastest)
  steps = nil, ---@type integer? max denoising steps per completion
  max_tokens = nil, ---@type integer? length budget of a completion
  algorithm = nil, ---@type string? entropy | origin | maskgit_plus | topk_margin
  temperature = nil, ---@type number?
  threshold = nil, ---@type number? confidence threshold for parallel decoding (server default 0.9)
  cache = nil, ---@type string? dual | prefix | none (server default dual)
  debounce_ms = nil, ---@type integer?
  context_tokens = nil, ---@type integer?
  enabled_languages = nil, ---@type string[]?
  streaming = true, --- draw the partial text at every denoising step
  speculate = nil, ---@type boolean? compute the next completion before the current one is accepted (server default true)
  block_length = nil, ---@type integer? with a cache, decode in left-to-right blocks of this many tokens (server default 8)
  threads = nil, ---@type integer? CPU threads for a request (server default: measured at load; speculation uses one)
  context_cache_mb = nil, ---@type integer? MB of context K/V kept across requests (server default: 512; 0 = off)
  vicinity = nil, ---@type integer? tokens around a decided block recomputed at a new block (server default 8)
  latency_budget_ms = nil, ---@type integer? measure at load and fit context/steps/block to this budget (default none)
  min_confidence = nil, ---@type number? cut a suggestion before its first token less sure than this (server default: see docs/suggestions.md)
  min_shown_confidence = nil, ---@type number? show nothing when the first line's mean confidence is below this
  stats = nil, ---@type string? local acceptance statistics: on | off | code (server default on)
  engine = nil, ---@type string? URL of a `coda-lsp serve` that decodes (key from CODA_API_KEY); nil = local model
  next_edit = nil, ---@type string? next-edit suggestions: on | off | manual (server default on)
  next_edit_lines = nil, ---@type integer? lines of the window a next edit may change (server default 24, max 40)
  next_edit_min_confidence = nil, ---@type number? propose only next edits this sure (server default 0.5)
  next_edit_debounce_ms = nil, ---@type integer? wait after an edit before asking for next edits (server default 400)
}

--- snake_case option -> camelCase initializationOptions key
M.server_keys = {
  model_path = 'modelPath',
  device = 'device',
  dtype = 'dtype',
  quantize = 'quantize',
  steps = 'steps',
  max_tokens = 'maxTokens',
  algorithm = 'algorithm',
  temperature = 'temperature',
  threshold = 'threshold',
  cache = 'cache',
  debounce_ms = 'debounceMs',
  context_tokens = 'contextTokens',
  enabled_languages = 'enabledLanguages',
  streaming = 'streaming',
  speculate = 'speculate',
  block_length = 'blockLength',
  threads = 'threads',
  context_cache_mb = 'contextCacheMb',
  vicinity = 'vicinity',
  latency_budget_ms = 'latencyBudgetMs',
  min_confidence = 'minConfidence',
  min_shown_confidence = 'minShownConfidence',
  stats = 'stats',
  engine = 'engine',
  next_edit = 'nextEdit',
  next_edit_lines = 'nextEditLines',
  next_edit_min_confidence = 'nextEditMinConfidence',
  next_edit_debounce_ms = 'nextEditDebounceMs',
}

---@type coda.Config
M.current = vim.deepcopy(M.defaults)

local function check_keys(opts)
  for k in pairs(opts) do
    if M.defaults[k] == nil and M.server_keys[k] == nil and k ~= 'cmd' and k ~= 'python' then
      vim.notify(('coda: unknown option %q ignored'):format(k), vim.log.levels.WARN)
    end
  end
end

--- Merge user options over the defaults (`setup`); unknown keys are reported once, not fatal.
---@param opts table?
---@return coda.Config
function M.merge(opts)
  opts = opts or {}
  check_keys(opts)
  M.current = vim.tbl_deep_extend('force', vim.deepcopy(M.defaults), M.current or {}, opts)
  return M.current
end

--- The settings after `configure(opts)`: `opts` holds the whole set of server settings, as an
--- editor's settings section does, so a server setting it leaves out goes back to its default (nil:
--- the server's own); the plugin's options (keymaps, cmd, ...) stay as set up.
---@param opts table?
---@return coda.Config
function M.section(opts)
  opts = opts or {}
  check_keys(opts)
  local base = vim.deepcopy(M.current or M.defaults)
  for k in pairs(M.server_keys) do
    base[k] = vim.deepcopy(M.defaults[k])
  end
  M.current = vim.tbl_deep_extend('force', base, opts)
  return M.current
end

--- The server's initializationOptions / settings object (only keys that are set).
---@param cfg coda.Config?
---@return table
function M.server_options(cfg)
  cfg = cfg or M.current
  local out = {}
  for k, key in pairs(M.server_keys) do
    if cfg[k] ~= nil then
      out[key] = cfg[k]
    end
  end
  return out
end

--- The command line that starts the server.
---@param cfg coda.Config?
---@return string[]
function M.cmd(cfg)
  cfg = cfg or M.current
  local cmd
  if cfg.cmd then
    cmd = vim.deepcopy(cfg.cmd)
  elseif cfg.python then
    -- (the cli entry point directly: works whether or not the package has a __main__)
    cmd = { cfg.python, '-c', 'import sys; from coda_lsp.cli import main; sys.exit(main())', '--stdio' }
  else
    cmd = { cfg.server_path, '--stdio' }
  end
  vim.list_extend(cmd, cfg.server_args or {})
  return cmd
end

return M
