/**
 * "CoDA: Fill Selection": the selection is rewritten by the server (`coda.fillSelection`); while it
 * denoises, the partial text is previewed after the selection (a decoration, the code being replaced
 * is dimmed); then the server's `workspace/applyEdit` replaces the selection (applied by the client).
 */
import * as vscode from 'vscode';
import { ExecuteCommandRequest, LanguageClient } from 'vscode-languageclient/node';
import { PartialParams } from './inline';

const PREVIEW_MAX = 160;

export class FillPreview implements vscode.Disposable {
  private readonly dim = vscode.window.createTextEditorDecorationType({ opacity: '0.45' });
  private readonly after = vscode.window.createTextEditorDecorationType({
    after: { color: new vscode.ThemeColor('editorGhostText.foreground'), fontStyle: 'italic', margin: '0 0 0 1em' },
  });
  lastPreview = '';

  /** A partial whose range is a selection being filled: draw it. True when it was one. */
  onPartial(p: PartialParams): boolean {
    const r = p.range;
    const isSelection = r.start.line !== r.end.line || r.start.character !== r.end.character;
    if (!isSelection) {
      return false;   // a completion at the cursor: InlineStreamer's
    }
    const editor = vscode.window.visibleTextEditors.find((e) => e.document.uri.toString() === vscode.Uri.parse(p.uri).toString());
    if (!editor) {
      return true;
    }
    if (p.done) {
      this.clear(editor);
      return true;
    }
    const range = new vscode.Range(r.start.line, r.start.character, r.end.line, r.end.character);
    let text = p.text.replace(/\n/g, ' ⏎ ');
    if (text.length > PREVIEW_MAX) {
      text = text.slice(0, PREVIEW_MAX) + '…';
    }
    this.lastPreview = p.text;
    editor.setDecorations(this.dim, [range]);
    editor.setDecorations(this.after, [{
      range: new vscode.Range(range.end, range.end),
      renderOptions: { after: { contentText: `⟵ coda ${p.step}/${p.steps}: ${text}` } },
    }]);
    return true;
  }

  clear(editor?: vscode.TextEditor): void {
    for (const e of editor ? [editor] : vscode.window.visibleTextEditors) {
      e.setDecorations(this.dim, []);
      e.setDecorations(this.after, []);
    }
  }

  /** Run the fill on the active editor's selection. */
  async run(client: LanguageClient | undefined, log: vscode.LogOutputChannel | undefined): Promise<unknown> {
    const editor = vscode.window.activeTextEditor;
    if (!client || !client.isRunning()) {
      void vscode.window.showWarningMessage('CoDA: the server is not running. Run "CoDA: Restart Server" or "CoDA: Show Log".');
      return undefined;
    }
    if (!editor || editor.selection.isEmpty) {
      void vscode.window.showInformationMessage('CoDA: select the code to fill first.');
      return undefined;
    }
    const uri = client.code2ProtocolConverter.asUri(editor.document.uri);
    const range = client.code2ProtocolConverter.asRange(editor.selection);
    try {
      const result = await vscode.window.withProgress(
        { location: vscode.ProgressLocation.Window, title: 'CoDA: filling selection' },
        () => client.sendRequest(ExecuteCommandRequest.type, { command: 'coda.fillSelection', arguments: [{ uri, range }] }),
      ) as { applied?: boolean; reason?: string } | null;
      log?.info(`fill selection: ${JSON.stringify(result)}`);
      if (!result?.applied) {
        void vscode.window.showWarningMessage(`CoDA: nothing filled: ${result?.reason ?? 'the edit was not applied'}`);
      }
      return result;
    } catch (err) {
      void vscode.window.showErrorMessage(`CoDA: fill failed: ${err instanceof Error ? err.message : String(err)}`);
      return undefined;
    } finally {
      this.clear(editor);
    }
  }

  dispose(): void {
    this.dim.dispose();
    this.after.dispose();
  }
}
