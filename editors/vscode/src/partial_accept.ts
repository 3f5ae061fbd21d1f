/**
 * Partial accepts (next word / next line) counted in the local statistics.
 *
 * VS Code runs an inline item's command only when the whole item is accepted. The event for a partial
 * accept, `InlineCompletionItemProvider.handleDidPartiallyAcceptCompletionItem`, belongs to the proposed
 * API `inlineCompletionsAdditions`: VS Code refuses to register a provider that has it unless the
 * extension enables that proposal, which a published extension cannot. So the keys go through commands
 * of ours: run the built-in partial accept, and report what it inserted at the cursor against the item
 * shown (`coda.accepted [id, chars]`, as Neovim reports its partial accepts).
 */
import * as vscode from 'vscode';
import { ExecuteCommandRequest, LanguageClient } from 'vscode-languageclient/node';

interface Served {
  uri: string;
  items: vscode.InlineCompletionItem[];
}

/** The `coda.accepted` id an item carries, if any. */
function itemId(item: vscode.InlineCompletionItem): string | undefined {
  const c = item.command;
  return c && c.command === 'coda.accepted' && typeof c.arguments?.[0] === 'string' ? c.arguments[0] : undefined;
}

function itemText(item: vscode.InlineCompletionItem): string {
  return typeof item.insertText === 'string' ? item.insertText : item.insertText.value;
}

export class PartialAccepts {
  private served?: Served;

  constructor(private readonly client: () => LanguageClient | undefined) {}

  /** The items the provider last gave VS Code for `document` (what can be on screen). */
  note(document: vscode.TextDocument, items: vscode.InlineCompletionItem[]): void {
    this.served = { uri: document.uri.toString(), items };
  }

  /** Run the built-in partial accept `builtin`, then report the inserted text against its item. */
  async run(builtin: string): Promise<void> {
    const editor = vscode.window.activeTextEditor;
    if (!editor) {
      await vscode.commands.executeCommand(builtin);
      return;
    }
    const doc = editor.document;
    const cursor = editor.selection.active;
    const before = doc.getText();
    const offset = doc.offsetAt(cursor);
    const candidates = this.matching(doc, cursor);
    await vscode.commands.executeCommand(builtin);
    const after = doc.getText();
    const inserted = after.slice(offset, offset + after.length - before.length);
    if (after.length <= before.length || after !== before.slice(0, offset) + inserted + before.slice(offset)) {
      return;   // nothing was taken (or not at the cursor)
    }
    const hit = candidates.find((c) => c.rest.startsWith(inserted));
    const client = this.client();
    if (hit && client) {
      const chars = [...inserted].length;   // code points, as the server counts
      await client.sendRequest(ExecuteCommandRequest.type, { command: 'coda.accepted', arguments: [hit.id, chars] })
        .then(undefined, () => undefined);
    }
  }

  /** Served items at the cursor, each with what of it is still to accept (the text typed since its start removed). */
  private matching(doc: vscode.TextDocument, cursor: vscode.Position): Array<{ id: string; rest: string }> {
    if (!this.served || this.served.uri !== doc.uri.toString()) {
      return [];
    }
    const out = [];
    for (const item of this.served.items) {
      const id = itemId(item);
      const start = item.range?.start ?? cursor;
      if (!id || start.isAfter(cursor)) {
        continue;
      }
      const typed = doc.getText(new vscode.Range(start, cursor));
      const text = itemText(item);
      if (text.startsWith(typed)) {
        out.push({ id, rest: text.slice(typed.length) });
      }
    }
    return out;
  }
}
