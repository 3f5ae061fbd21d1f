/**
 * The coda-lsp process and its LanguageClient: start, stop with the window, restart after a crash
 * with back-off, and never loop on a server that cannot start (missing binary, crash at start):
 * those get one clear error notification saying what to do.
 */
import * as vscode from 'vscode';
import {
  CloseAction, CloseHandlerResult, ErrorAction, ErrorHandlerResult, LanguageClient, LanguageClientOptions,
  ServerOptions, State, TransportKind,
} from 'vscode-languageclient/node';
import { serverCommand, serverOptions } from './settings';

/** A server that dies sooner than this after starting "failed at start": no automatic restart. */
const START_GRACE_MS = 15_000;
const MAX_RESTARTS = 5;
const RESTART_WINDOW_MS = 3 * 60_000;

export interface ClientHooks {
  middleware: LanguageClientOptions['middleware'];
  /** Called before start(), so notification handlers see the first `coda/status`. */
  onCreated(client: LanguageClient): void;
  onStarted(client: LanguageClient): void;
  onFailed(message: string): void;
  log: vscode.LogOutputChannel;
}

export class ServerManager implements vscode.Disposable {
  client?: LanguageClient;
  private startedAt = 0;
  private restarts: number[] = [];
  private stopping = false;
  /** One notification per failed start: a dead process also closes the connection. */
  private reported = false;
  private origin = '';

  constructor(private readonly hooks: ClientHooks) {}

  async start(): Promise<LanguageClient | undefined> {
    const cmd = serverCommand();
    this.reported = false;
    if ('error' in cmd) {
      this.fail(cmd.error);
      return undefined;
    }
    this.origin = cmd.origin;
    this.hooks.log.info(`starting ${cmd.command} ${cmd.args.join(' ')} (${cmd.origin})`);
    const server: ServerOptions = { command: cmd.command, args: cmd.args, transport: TransportKind.stdio };
    const options: LanguageClientOptions = {
      documentSelector: [{ scheme: 'file' }, { scheme: 'untitled' }],
      initializationOptions: serverOptions(),
      outputChannel: this.hooks.log,
      middleware: this.hooks.middleware,
      initializationFailedHandler: (error) => {
        this.startFailed(cmd.origin, error);
        return false;
      },
      errorHandler: {
        // connection errors come with a close (handled below): no extra notification for them
        error: (): ErrorHandlerResult => ({ action: ErrorAction.Continue, handled: true }),
        closed: () => this.onClosed(),
      },
    };
    const client = new LanguageClient('coda', 'CoDA', server, options);
    this.client = client;
    this.hooks.onCreated(client);
    this.startedAt = Date.now();
    this.stopping = false;
    this.reported = false;
    try {
      await client.start();
    } catch (err) {
      this.startFailed(cmd.origin, err);
      return undefined;
    }
    this.hooks.onStarted(client);
    return client;
  }

  /** The connection closed: restart with back-off unless it failed at start or keeps crashing. */
  private async onClosed(): Promise<CloseHandlerResult> {
    if (this.stopping) {
      return { action: CloseAction.DoNotRestart, handled: true };
    }
    const now = Date.now();
    if (now - this.startedAt < START_GRACE_MS) {
      this.startFailed(this.origin, new Error('it exited while starting (check coda.serverPath / coda.pythonPath / coda.modelPath)'));
      return { action: CloseAction.DoNotRestart, handled: true };
    }
    this.restarts = this.restarts.filter((t) => now - t < RESTART_WINDOW_MS);
    if (this.restarts.length >= MAX_RESTARTS) {
      this.fail(`coda-lsp crashed ${MAX_RESTARTS} times in 3 minutes; not restarting. See "CoDA: Show Log", then "CoDA: Restart Server".`);
      return { action: CloseAction.DoNotRestart, handled: true };
    }
    const delay = Math.min(30_000, 1000 * 2 ** this.restarts.length);
    this.restarts.push(now);
    this.hooks.log.warn(`coda-lsp stopped; restarting in ${delay / 1000} s`);
    await new Promise((r) => setTimeout(r, delay));
    this.startedAt = Date.now();
    return { action: CloseAction.Restart, handled: true };
  }

  private startFailed(origin: string, err: unknown): void {
    this.fail(`coda-lsp (${origin}) did not start: ${err instanceof Error ? err.message : String(err)}. `
      + 'Run it in a terminal to see why, or check "CoDA: Show Log"; then "CoDA: Restart Server".');
  }

  private fail(message: string): void {
    this.hooks.log.error(message);
    if (this.reported) {
      return;
    }
    this.reported = true;
    this.hooks.onFailed(message);
    void vscode.window.showErrorMessage(`CoDA: ${message}`, 'Open Settings', 'Show Log').then((choice) => {
      if (choice === 'Open Settings') {
        void vscode.commands.executeCommand('workbench.action.openSettings', 'coda.');
      } else if (choice === 'Show Log') {
        this.hooks.log.show();
      }
    });
  }

  async stop(): Promise<void> {
    const client = this.client;
    this.client = undefined;
    this.stopping = true;
    if (client && client.state !== State.Stopped) {
      try {
        await client.stop(5000);
      } catch (err) {
        this.hooks.log.warn(`stopping coda-lsp: ${String(err)}`);
      }
    }
  }

  async restart(): Promise<LanguageClient | undefined> {
    await this.stop();
    this.restarts = [];
    return this.start();
  }

  dispose(): void {
    void this.stop();
  }
}
