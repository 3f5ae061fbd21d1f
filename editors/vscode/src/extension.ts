/**
 * CoDA for VS Code: starts coda-lsp, shows its (streamed) inline completions as ghost text, and
 * adds Fill Selection / Toggle / Restart Server / Show Log and a status bar item.
 */
import * as vscode from 'vscode';
import { DidChangeConfigurationNotification, LanguageClient, State as ClientState } from 'vscode-languageclient/node';
import { ServerManager } from './client';
import { FillPreview } from './fill';
import { InlineStreamer, PartialParams } from './inline';
import { PartialAccepts } from './partial_accept';
import { NextEdits } from './nextEdit';
import { cfg, RESTART_KEYS, serverOptions } from './settings';
import { State, StatusItem } from './status';

let manager: ServerManager | undefined;

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  const log = vscode.window.createOutputChannel('CoDA', { log: true });
  const status = new StatusItem();
  const fill = new FillPreview();
  const streamer = new InlineStreamer(() => manager?.client);
  const partialAccepts = new PartialAccepts(() => manager?.client);
  streamer.onServed = (document, items) => partialAccepts.note(document, items);
  const nextEdits = new NextEdits(() => manager?.client, log);
  const applySettings = () => {
    streamer.enabled = cfg().get<boolean>('enabled', true);
    streamer.streaming = cfg().get<boolean>('streaming', true);
    status.setEnabled(streamer.enabled);
  };
  applySettings();

  manager = new ServerManager({
    log,
    middleware: { provideInlineCompletionItems: streamer.provide },
    onCreated: (client: LanguageClient) => {
      status.set('starting');
      client.onNotification('coda/partialCompletion', (p: PartialParams) => {
        if (!fill.onPartial(p)) {
          streamer.onPartial(p);
        }
      });
      client.onNotification('coda/status', (s: { state: State; message?: string }) => status.set(s.state, s.message));
      client.onDidChangeState((e) => {
        if (e.newState === ClientState.Stopped && status.state !== 'error') {
          status.set('stopped');
        }
      });
    },
    onStarted: () => {
      if (status.state === 'starting') {
        status.set('loading');
      }
    },
    onFailed: (message: string) => status.set('error', message),
  });

  context.subscriptions.push(
    log, status, fill, streamer, manager, nextEdits,
    vscode.commands.registerCommand('coda.nextEdit.suggest', () => nextEdits.request(undefined, true)),
    vscode.commands.registerCommand('coda.nextEdit.jumpOrAccept', () => nextEdits.jumpOrAccept()),
    vscode.commands.registerCommand('coda.nextEdit.jump', () => nextEdits.jump()),
    vscode.commands.registerCommand('coda.nextEdit.accept', () => nextEdits.accept()),
    vscode.commands.registerCommand('coda.nextEdit.dismiss', () => nextEdits.dismiss()),
    vscode.commands.registerCommand('coda.fill', () => fill.run(manager?.client, log)),
    vscode.commands.registerCommand('coda.toggle', async () => {
      const on = !cfg().get<boolean>('enabled', true);
      await cfg().update('enabled', on, vscode.ConfigurationTarget.Global);
      void vscode.window.setStatusBarMessage(`CoDA inline completion ${on ? 'on' : 'off'}`, 2000);
    }),
    vscode.commands.registerCommand('coda.restartServer', async () => {
      streamer.reset();
      status.set('starting');
      await manager?.restart();
    }),
    vscode.commands.registerCommand('coda.showLog', () => log.show()),
    // Ctrl+Right / Ctrl+Alt+Right: the built-in partial accepts, counted (see partial_accept.ts)
    vscode.commands.registerCommand('coda.acceptNextWord',
      () => partialAccepts.run('editor.action.inlineSuggest.acceptNextWord')),
    vscode.commands.registerCommand('coda.acceptNextLine',
      () => partialAccepts.run('editor.action.inlineSuggest.acceptNextLine')),
    vscode.workspace.onDidChangeConfiguration(async (e) => {
      if (!e.affectsConfiguration('coda')) {
        return;
      }
      applySettings();
      if (!streamer.enabled) {
        streamer.reset();
      }
      if (RESTART_KEYS.some((k) => e.affectsConfiguration(`coda.${k}`))) {
        await manager?.restart();
        return;
      }
      const client = manager?.client;
      if (client && client.state === ClientState.Running) {
        await client.sendNotification(DidChangeConfigurationNotification.type, { settings: serverOptions() });
      }
    }),
  );
  await manager.start();
}

export async function deactivate(): Promise<void> {
  await manager?.stop();
  manager = undefined;
}
