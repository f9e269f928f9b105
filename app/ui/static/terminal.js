// An interactive shell (exec) or the console of a container in xterm.js, over the gateway's websocket. The
// websocket opens with a one-time ticket (POST /v1/tickets), never with the token or the session cookie.
import { Terminal } from './vendor/xterm-6.0.0/xterm.mjs';
import { FitAddon } from './vendor/xterm-addon-fit-0.11.0/addon-fit.mjs';

let current = null;

function link(href) {
  if (document.querySelector(`link[href="${href}"]`)) return;
  const node = document.createElement('link');
  node.rel = 'stylesheet';
  node.href = href;
  document.head.append(node);
}

export function disconnect() {
  if (!current) return;
  const { socket, term, onResize } = current;
  current = null;
  window.removeEventListener('resize', onResize);
  if (socket.readyState <= WebSocket.OPEN) socket.close(1000);
  term.dispose();
}

export async function connect({ api, remote, name, mode, host, status, closeButton, onProblem }) {
  link('/ui/static/vendor/xterm-6.0.0/xterm.css');
  disconnect();
  host.replaceChildren();
  const term = new Terminal({ cursorBlink: true, convertEol: false, fontSize: 14, scrollback: 2000 });
  const fit = new FitAddon();
  term.loadAddon(fit);
  term.open(host);
  fit.fit();
  const { ticket } = await api('POST', '/v1/tickets');
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  const route = mode === 'console' ? 'console' : 'exec/ws';
  const params = new URLSearchParams({ ticket, ...(remote ? { remote } : {}) });
  const socket = new WebSocket(`${scheme}://${location.host}/v1/containers/${encodeURIComponent(name)}/${route}?${params}`);
  socket.binaryType = 'arraybuffer';
  const encoder = new TextEncoder();
  const onResize = () => fit.fit();
  current = { socket, term, onResize };
  window.addEventListener('resize', onResize);
  status.textContent = `connecting to ${name}…`;
  host.dataset.state = 'connecting';
  closeButton.disabled = false;
  closeButton.onclick = () => disconnect();

  socket.onopen = () => {
    socket.send(JSON.stringify({ command: ['/bin/sh'], interactive: true, width: term.cols, height: term.rows }));
    status.textContent = `connected to ${name} (${mode})`;
    host.dataset.state = 'open';
    term.focus();
  };
  socket.onmessage = (event) => {
    if (typeof event.data === 'string') {
      const message = JSON.parse(event.data);
      if (message.type === 'exit') term.write(`\r\n[exited with ${message.exit_code}]\r\n`);
      return;
    }
    term.write(new Uint8Array(event.data));
  };
  socket.onclose = (event) => {
    host.dataset.state = 'closed';
    closeButton.disabled = true;
    status.textContent = `disconnected (${event.code}${event.reason ? ': ' + event.reason : ''})`;
    if (event.code >= 4000 && event.code < 5000) {
      onProblem({ message: event.reason || `refused with ${event.code - 4000}` });
    }
  };
  term.onData((data) => { if (socket.readyState === WebSocket.OPEN) socket.send(encoder.encode(data)); });
  term.onResize(({ cols, rows }) => {
    if (socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ type: 'resize', width: cols, height: rows }));
  });
}
