/**
 * Next-edit suggestions (`coda/nextEdit`) on VS Code's stable API: the proposed inline-edit API is not
 * available to a published extension, so the edit is drawn with decorations where it applies (the old
 * text struck through, the new text after it), and commands jump to it, accept it and dismiss it,
 * bound to Tab and Escape while one is shown (context key `coda.nextEditVisible`).
 *
 * A request goes out after each change of the active document (the server waits nextEditDebounceMs and
 * drops a request superseded by the next one), or on "CoDA: Suggest Next Edit" (invoked: answered in
 * manual mode too). An answer for a document version that has moved on is never drawn; any change
 * clears what is drawn.
 */
import * as vscode from 'vscode';
import { LanguageClient, State } from 'vscode-languageclient/node';
import { cfg } from './settings';

interface LspPos { line: number; character: number }
export interface NextEditItem {
  range: { start: LspPos; end: LspPos };
  text: string;
  textDocument: { uri: string; version: number };
  command?: { title: string; command: string; arguments?: unknown[] };
}

const CONTEXT_KEY = 'coda.nextEditVisible';
const SETTLE_MS = 30;   // the server has its own, longer nextEditDebounceMs

export class NextEdits implements vscode.Disposable {
  private readonly old = vscode.window.createTextEditorDecorationType({
    textDecoration: 'line-through',
    backgroundColor: new vscode.ThemeColor('diffEditor.removedTextBackground'),
  });
  private readonly added = vscode.window.createTextEditorDecorationType({
    after: { color: new vscode.ThemeColor('editorGhostText.foreground'), margin: '0 0 0 0.2em',
      backgroundColor: new vscode.ThemeColor('diffEditor.insertedTextBackground') },
  });
  private shown?: { editor: vscode.TextEditor; edit: NextEditItem; range: vscode.Range };
  private pending?: vscode.CancellationTokenSource;
  private timer?: ReturnType<typeof setTimeout>;
  private readonly subscriptions: vscode.Disposable[] = [];

  constructor(private readonly client: () => LanguageClient | undefined, private readonly log: vscode.LogOutputChannel) {
    this.subscriptions.push(vscode.workspace.onDidChangeTextDocument((e) => {
      if (this.shown && e.document === this.shown.editor.document) {
        this.clear();
      }
      const editor = vscode.window.activeTextEditor;
      if (editor && e.document === editor.document && e.contentChanges.length > 0) {
        // after this event has reached every listener: the language client's didChange goes out first
        // (this listener may run before it), so the request never names a version the server has not seen
        clearTimeout(this.timer);
        this.timer = setTimeout(() => void this.request(editor, false), SETTLE_MS);
      }
    }));
  }

  /** Ask the server for the next edit at the cursor of `editor`; `invoked` = the user asked. */
  async request(editor: vscode.TextEditor | undefined = vscode.window.activeTextEditor, invoked = true): Promise<void> {
    const client = this.client();
    const mode = cfg().get<string>('nextEdit', 'on');
    if (!editor || !client || client.state !== State.Running || mode === 'off' || (mode === 'manual' && !invoked)) {
      return;
    }
    this.pending?.cancel();
    const source = new vscode.CancellationTokenSource();
    this.pending = source;
    const doc = editor.document;
    const pos = editor.selection.active;
    const params = { textDocument: { uri: doc.uri.toString(), version: doc.version },
      position: { line: pos.line, character: pos.character }, invoked: invoked || undefined };
    this.log.debug(`coda/nextEdit v${doc.version} at ${pos.line + 1}:${pos.character + 1}${invoked ? ' (asked)' : ''}`);
    let answer: { edits?: NextEditItem[] } | null;
    try {
      answer = await client.sendRequest<{ edits?: NextEditItem[] } | null>('coda/nextEdit', params, source.token);
    } catch (err) {
      if (!source.token.isCancellationRequested) {
        this.log.warn(`coda/nextEdit failed: ${String(err)}`);
      }
      return;
    }
    const edit = answer?.edits?.[0];
    this.log.debug(`coda/nextEdit v${doc.version}: ${answer?.edits?.length ?? 0} edit(s), document at v${doc.version}`);
    // never draw an edit made for another version of the document
    if (source.token.isCancellationRequested || !edit || edit.textDocument.version !== doc.version) {
      return;
    }
    this.show(editor, edit);
  }

  private show(editor: vscode.TextEditor, edit: NextEditItem): void {
    const r = edit.range;
    const range = new vscode.Range(r.start.line, r.start.character, r.end.line, r.end.character);
    editor.setDecorations(this.old, range.isEmpty ? [] : [range]);
    const text = edit.text.replace(/\n/g, ' ⏎ ') || '⌫';
    editor.setDecorations(this.added, [{ range: new vscode.Range(range.end, range.end),
      renderOptions: { after: { contentText: text } } }]);
    this.shown = { editor, edit, range };
    void vscode.commands.executeCommand('setContext', CONTEXT_KEY, true);
    this.log.info(`next edit shown at ${r.start.line + 1}:${r.start.character + 1}: ${JSON.stringify(edit.text)}`);
  }

  clear(): void {
    if (this.shown) {
      this.shown.editor.setDecorations(this.old, []);
      this.shown.editor.setDecorations(this.added, []);
    }
    this.shown = undefined;
    void vscode.commands.executeCommand('setContext', CONTEXT_KEY, false);
  }

  /** Move the cursor to the shown edit (revealing it); false when none is shown. */
  jump(): boolean {
    const s = this.shown;
    if (!s) {
      return false;
    }
    s.editor.selection = new vscode.Selection(s.range.start, s.range.start);
    s.editor.revealRange(s.range, vscode.TextEditorRevealType.InCenterIfOutsideViewport);
    return true;
  }

  /** Apply the shown edit and tell the server (its local statistics). */
  async accept(): Promise<boolean> {
    const s = this.shown;
    if (!s) {
      return false;
    }
    this.clear();
    const ok = await s.editor.edit((b) => b.replace(s.range, s.edit.text));
    if (ok && s.edit.command) {
      await vscode.commands.executeCommand(s.edit.command.command, ...(s.edit.command.arguments ?? []));
    }
    return ok;
  }

  /** Tab: jump to the edit when the cursor is elsewhere, apply it when the cursor is on it. */
  async jumpOrAccept(): Promise<void> {
    const s = this.shown;
    if (s && s.editor.selection.active.isEqual(s.range.start)) {
      await this.accept();
    } else {
      this.jump();
    }
  }

  /** Escape: drop the edit; the server records it as rejected. */
  async dismiss(): Promise<void> {
    const s = this.shown;
    this.clear();
    const sid = s?.edit.command?.arguments?.[0];
    if (typeof sid === 'string') {
      await vscode.commands.executeCommand('coda.rejected', sid).then(undefined, () => undefined);
    }
  }

  dispose(): void {
    this.pending?.cancel();
    clearTimeout(this.timer);
    this.clear();
    this.old.dispose();
    this.added.dispose();
    this.subscriptions.forEach((d) => d.dispose());
  }
}
