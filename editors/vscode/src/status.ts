/**
 * The status bar item: loading / ready / busy / error from `coda/status`, or off. (The model load's
 * `$/progress` is shown by vscode-languageclient as a progress notification.)
 */
import * as vscode from 'vscode';

export type State = 'starting' | 'loading' | 'ready' | 'busy' | 'error' | 'stopped';

const ICONS: Record<State, string> = {
  starting: '$(loading~spin)', loading: '$(loading~spin)', ready: '$(check)', busy: '$(sync~spin)',
  error: '$(error)', stopped: '$(circle-slash)',
};

export class StatusItem implements vscode.Disposable {
  readonly item = vscode.window.createStatusBarItem('coda.status', vscode.StatusBarAlignment.Right, 100);
  state: State = 'starting';
  message = '';
  enabled = true;

  constructor() {
    this.item.name = 'CoDA';
    this.item.command = 'coda.showLog';
    this.render();
    this.item.show();
  }

  set(state: State, message?: string): void {
    this.state = state;
    this.message = message ?? '';
    this.render();
  }

  setEnabled(on: boolean): void {
    this.enabled = on;
    this.render();
  }

  private render(): void {
    const label = this.enabled ? this.state : 'off';
    const icon = this.enabled ? ICONS[this.state] : '$(circle-slash)';
    this.item.text = `${icon} CoDA: ${label}`;
    this.item.tooltip = `coda-lsp: ${this.state}${this.message ? ' — ' + this.message : ''}\nClick to show the log.`;
    this.item.backgroundColor = this.state === 'error' ? new vscode.ThemeColor('statusBarItem.errorBackground') : undefined;
  }

  dispose(): void {
    this.item.dispose();
  }
}
