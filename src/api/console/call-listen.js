// Listen-in from a live call's detail page: the console's phone (phone.js) in receive-only mode.
// The page holds the session cookie only; the phone's SIP digest needs the token, asked for here
// and kept in this page's memory.
import { el } from '/console/dom.js';
import { createPhone } from '/console/phone.js';

export function listenControls(host, callId) {
  const token = el('input');
  token.type = 'password';
  token.placeholder = 'API token';
  token.autocomplete = 'off';
  token.id = 'listen-token';
  const button = el('button', 'Listen', 'listen');
  button.type = 'button';
  const state = el('span', '', 'muted');
  state.id = 'listen-state';
  let phone;
  button.onclick = async () => {
    if (phone?.isListening(callId)) return phone.stopListening(callId);
    if (!phone) {
      if (!token.value) return void (state.textContent = 'enter the API token');
      phone = createPhone({ token: token.value, onState: () => {}, audio: el('audio') });
      window.phone = phone; // tests read phone.listenLevelAt
      token.value = '';
      token.hidden = true;
    }
    button.textContent = 'Stop listening';
    state.textContent = 'connecting…';
    try {
      await phone.listen(callId, (why) => {
        button.textContent = 'Listen';
        state.textContent = why ? 'listen-in refused: ' + why : 'listen-in ended';
      });
      state.textContent = 'listening';
    } catch (err) {
      button.textContent = 'Listen';
      state.textContent = 'listen-in failed: ' + err.message;
    }
  };
  host.replaceChildren(token, button, state);
  host.hidden = false;
}
