/**
 * Inline ghost text with streaming.
 *
 * vscode-languageclient registers the InlineCompletionItemProvider (the server advertises
 * inlineCompletionProvider); this middleware sits in front of it. Without streaming it just forwards.
 * With streaming, one LSP request per (document version, position) is kept in flight; each
 * `coda/partialCompletion` for it is turned into ghost text by re-fetching VS Code's inline
 * suggestion (`refetch`), which calls the provider again and gets the latest partial text at once;
 * the final response replaces it. VS Code cancelling a provider call does not cancel the model run for the
 * same position (that would throw away the stream); a request for a new position does.
 *
 * Cycling (VS Code's Show Next / Previous Inline Suggestion, Alt+] / Alt+[): VS Code asks again with an
 * explicit (Invoke) trigger. Once the automatic run's final items were served at this position, such a
 * request starts an invoked run, for which the server returns several candidates (the greedy one first).
 * Our own re-fetches are explicit too, but they never come after the final items were served.
 */
import * as vscode from 'vscode';
import { InlineCompletionRequest, LanguageClient } from 'vscode-languageclient/node';

export interface PartialParams {
  uri: string;
  version: number | null;
  range: { start: { line: number; character: number }; end: { line: number; character: number } };
  text: string;
  /** The decoded text before the first still-masked token, cut by the confidence gate (older servers: absent). */
  prefix?: string;
  step: number;
  steps: number;
  maskedCount: number;
  done: boolean;
}

type Result = vscode.InlineCompletionItem[] | vscode.InlineCompletionList | null | undefined;

interface Flight {
  key: string;
  uri: string;
  version: number;
  position: vscode.Position;
  cts: vscode.CancellationTokenSource;
  partial?: { text: string; range: vscode.Range; step: number; steps: number };
  final?: vscode.InlineCompletionItem[];
  finalServed?: boolean;
  /** Started by an explicit trigger: the server answers with several candidates. */
  invoked: boolean;
  /** What stays shown while an invoked run computes (the automatic run's items at the same place): its
   * partials are not drawn, so VS Code keeps the suggestion the user sees and can cycle once it is done. */
  shown?: vscode.InlineCompletionItem[];
  waiters: Array<() => void>;
}

/** Re-ask after these delays (ms) until VS Code has fetched the final items: a trigger that lands while
 * VS Code's fetch for the last partial is still running is merged into that fetch and shows the partial. */
const FINAL_RETRIES_MS = [100, 300, 700, 1500];

/**
 * Make VS Code call the provider again at the same position. A plain `inlineSuggest.trigger` is not
 * enough: once an explicit request's items are shown for this (position, version), VS Code treats them
 * as satisfying every later trigger there and never asks again, so only the first partial would show.
 * Hiding first drops those items; the provider answers at once from the stream, so nothing flickers
 * for longer than a frame.
 */
async function refetch(): Promise<void> {
  await vscode.commands.executeCommand('editor.action.inlineSuggest.hide');
  await vscode.commands.executeCommand('editor.action.inlineSuggest.trigger');
}

export class InlineStreamer implements vscode.Disposable {
  enabled = true;
  streaming = true;
  private flight?: Flight;
  private readonly emitter = new vscode.EventEmitter<PartialParams>();
  /** Called with the final items given to VS Code (what the partial accepts report against). */
  onServed?: (document: vscode.TextDocument, items: vscode.InlineCompletionItem[]) => void;
  /** Fired after a partial was turned into ghost text (the tests and the status bar read it). */
  readonly onDidShowPartial = this.emitter.event;

  constructor(private readonly client: () => LanguageClient | undefined) {}

  /** The `provideInlineCompletionItems` middleware. */
  provide = async (document: vscode.TextDocument, position: vscode.Position, context: vscode.InlineCompletionContext,
    token: vscode.CancellationToken, next: (d: vscode.TextDocument, p: vscode.Position, c: vscode.InlineCompletionContext,
      t: vscode.CancellationToken) => vscode.ProviderResult<vscode.InlineCompletionItem[] | vscode.InlineCompletionList>): Promise<Result> => {
    if (!this.enabled) {
      return null;
    }
    const client = this.client();
    if (!this.streaming || !client) {
      const result = await next(document, position, context, token);
      if (result) {
        this.onServed?.(document, Array.isArray(result) ? result : result.items);
      }
      return result;
    }
    const uri = client.code2ProtocolConverter.asUri(document.uri);
    const key = `${uri}@${document.version}:${position.line}:${position.character}`;
    let flight = this.flight;
    const invoked = context.triggerKind === vscode.InlineCompletionTriggerKind.Invoke;
    const wantsMore = invoked && !!flight && flight.key === key && !flight.invoked && !!flight.finalServed;
    if (!flight || flight.key !== key || wantsMore) {
      const before = wantsMore ? flight!.final : undefined;
      flight = this.start(client, document, position, context, uri, key, invoked);
      flight.shown = before;
    }
    if (!flight.final && flight.shown) {
      this.onServed?.(document, flight.shown);
      return flight.shown;
    }
    if (!flight.final && !flight.partial) {
      await new Promise<void>((resolve) => {
        flight!.waiters.push(resolve);
        token.onCancellationRequested(() => resolve());
      });
    }
    if (token.isCancellationRequested || this.flight !== flight) {
      return null;
    }
    if (flight.final) {
      flight.finalServed = true;
      this.onServed?.(document, flight.final);
      return flight.final;
    }
    const p = flight.partial!;
    return [new vscode.InlineCompletionItem(p.text, p.range)];
  };

  private start(client: LanguageClient, document: vscode.TextDocument, position: vscode.Position,
    context: vscode.InlineCompletionContext, uri: string, key: string, invoked: boolean): Flight {
    this.flight?.cts.cancel();   // a new position: the old model run is useless ($/cancelRequest)
    const flight: Flight = {
      key, uri, version: document.version, position, cts: new vscode.CancellationTokenSource(), waiters: [], invoked,
    };
    this.flight = flight;
    const params = client.code2ProtocolConverter.asInlineCompletionParams(document, position, context);
    client.sendRequest(InlineCompletionRequest.type, params, flight.cts.token).then(async (result) => {
      const converted = await client.protocol2CodeConverter.asInlineCompletionResult(result ?? null);
      flight.final = converted === undefined ? [] : Array.isArray(converted) ? converted : converted.items;
      this.wake(flight, true);
      this.ensureFinalShown(flight);
    }, () => {
      flight.final = [];
      this.wake(flight, false);
    });
    return flight;
  }

  /** Resolve waiting provider calls, or ask VS Code to call the provider again to refresh the ghost text. */
  private wake(flight: Flight, refresh: boolean): void {
    const waiters = flight.waiters.splice(0);
    waiters.forEach((w) => w());
    if (waiters.length === 0 && refresh && this.flight === flight && this.isAtCursor(flight)) {
      void refetch();
    }
  }

  private ensureFinalShown(flight: Flight): void {
    for (const ms of FINAL_RETRIES_MS) {
      setTimeout(() => {
        if (!flight.finalServed && this.flight === flight && this.isAtCursor(flight)) {
          void refetch();
        }
      }, ms);
    }
  }

  private isAtCursor(flight: Flight): boolean {
    const editor = vscode.window.activeTextEditor;
    return !!editor && editor.document.uri.toString() === vscode.Uri.parse(flight.uri).toString()
      && editor.document.version === flight.version && editor.selection.active.isEqual(flight.position);
  }

  /** `coda/partialCompletion` for a completion at the cursor (fills are shown by FillPreview). */
  onPartial(p: PartialParams): boolean {
    const flight = this.flight;
    if (!this.enabled || !flight || flight.final || p.uri !== flight.uri || (p.version !== null && p.version !== flight.version)) {
      return false;
    }
    // While it streams, the ghost text is the confident decoded prefix: what Tab would accept. The full
    // step text leaves masked spans out, so accepting it would insert words with gaps between them.
    const shown = p.prefix ?? p.text;
    if (p.done || shown.length === 0 || flight.shown) {
      return true;
    }
    const r = p.range;
    flight.partial = {
      text: shown, step: p.step, steps: p.steps,
      range: new vscode.Range(r.start.line, r.start.character, r.end.line, r.end.character),
    };
    this.wake(flight, true);
    this.emitter.fire(p);
    return true;
  }

  /** Forget the current run (toggle off, restart). */
  reset(): void {
    this.flight?.cts.cancel();
    this.flight?.waiters.splice(0).forEach((w) => w());
    this.flight = undefined;
  }

  dispose(): void {
    this.reset();
    this.emitter.dispose();
  }
}
