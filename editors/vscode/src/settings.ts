/**
 * `coda.*` settings: what starts the server, and what goes to it as initializationOptions /
 * workspace/didChangeConfiguration (the camelCase keys of coda_lsp/options.py's SETTINGS table, so
 * the server never warns about editor-only keys such as serverPath).
 */
import * as fs from 'fs';
import * as path from 'path';
import * as vscode from 'vscode';

export const SERVER_KEYS = [
  'modelPath', 'device', 'dtype', 'quantize', 'steps', 'maxTokens', 'algorithm', 'temperature', 'threshold',
  'debounceMs', 'contextTokens', 'enabledLanguages', 'streaming', 'cache', 'blockLength', 'speculate', 'threads',
  'engine', 'contextCacheMb', 'vicinity', 'latencyBudgetMs',
  'minConfidence', 'minShownConfidence', 'stats',
  'nextEdit', 'nextEditLines', 'nextEditMinConfidence', 'nextEditDebounceMs',
] as const;

/** Settings whose change needs a new server process. */
export const RESTART_KEYS = ['serverPath', 'pythonPath', 'serverArgs'];

export function cfg(): vscode.WorkspaceConfiguration {
  return vscode.workspace.getConfiguration('coda');
}

/**
 * initializationOptions / didChangeConfiguration for coda-lsp: only the settings the user set
 * (user, workspace or folder scope). The defaults in package.json are documentation; the server's
 * own defaults apply to everything left unset (tests/test_settings.py keeps the two equal).
 * `streaming` is the one exception: the extension draws partial completions, so it asks for them
 * unless the user turned streaming off.
 */
export function serverOptions(): Record<string, unknown> {
  const c = cfg();
  const out: Record<string, unknown> = {};
  for (const key of SERVER_KEYS) {
    const i = c.inspect<unknown>(key);
    const v = i?.workspaceFolderValue ?? i?.workspaceValue ?? i?.globalValue;
    if (v === undefined || v === '') {
      continue;
    }
    out[key] = key === 'modelPath' ? expandHome(String(v)) : v;
  }
  out.streaming = c.get<boolean>('streaming', true);
  return out;
}

export function expandHome(p: string): string {
  return p.startsWith('~/') ? path.join(process.env.HOME ?? '', p.slice(2)) : p;
}

export interface ServerCommand {
  command: string;
  args: string[];
  /** How it was chosen, for error messages. */
  origin: string;
}

/** Find an executable: an absolute/relative path as given, else on PATH. */
export function findExecutable(name: string): string | undefined {
  const isFile = (p: string) => {
    try {
      return fs.statSync(p).isFile();
    } catch {
      return false;
    }
  };
  if (name.includes('/') || name.includes('\\')) {
    const p = expandHome(name);
    return isFile(p) ? p : undefined;
  }
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (dir && isFile(path.join(dir, name))) {
      return path.join(dir, name);
    }
  }
  return undefined;
}

/**
 * The command that starts the server: coda.serverPath, else coda.pythonPath running the CLI
 * entry point, else `coda-lsp` on PATH. Undefined (with the reason) when none exists.
 */
export function serverCommand(): ServerCommand | { error: string } {
  const c = cfg();
  const extra = c.get<string[]>('serverArgs') ?? [];
  const serverPath = (c.get<string>('serverPath') ?? '').trim();
  const pythonPath = (c.get<string>('pythonPath') ?? '').trim();
  if (serverPath) {
    const exe = findExecutable(serverPath);
    return exe
      ? { command: exe, args: ['--stdio', ...extra], origin: `coda.serverPath (${serverPath})` }
      : { error: `coda.serverPath "${serverPath}" does not exist. Fix it in Settings, or clear it to use coda-lsp from PATH.` };
  }
  if (pythonPath) {
    const exe = findExecutable(pythonPath);
    const entry = 'import sys; from coda_lsp.cli import main; sys.exit(main())';
    return exe
      ? { command: exe, args: ['-c', entry, '--stdio', ...extra], origin: `coda.pythonPath (${pythonPath})` }
      : { error: `coda.pythonPath "${pythonPath}" does not exist. Point it at the Python that has coda-lsp installed.` };
  }
  const exe = findExecutable('coda-lsp');
  return exe
    ? { command: exe, args: ['--stdio', ...extra], origin: 'coda-lsp on PATH' }
    : { error: 'coda-lsp was not found on PATH. Install it (`pip install -e .` in the coda-lsp repo) and set coda.serverPath (the coda-lsp executable) or coda.pythonPath.' };
}
