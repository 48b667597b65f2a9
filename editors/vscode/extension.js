// Starts `sw lsp` (the command is the setting stackwise.server.command) for .sw files.
const vscode = require("vscode");
const { LanguageClient } = require("vscode-languageclient/node");

let client;

function activate(context) {
  const [command, ...args] = vscode.workspace
    .getConfiguration("stackwise")
    .get("server.command", ["sw", "lsp"]);
  client = new LanguageClient(
    "stackwise",
    "stackwise-dsl",
    { command, args },
    { documentSelector: [{ language: "sw" }] }
  );
  context.subscriptions.push({ dispose: () => client && client.stop() });
  return client.start();
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate };
