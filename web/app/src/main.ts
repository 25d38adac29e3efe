// The Custos web client: sign in, spaces, a live timeline, send.
import './style.css';
import { loadConfig, type OrgConfig } from './config';
import { beginLogin, finishLogin, isCallback, resume, type Tokens } from './auth';
import { forget, keepRefreshToken, keptRefreshToken } from './store';
import { Session, loadEngine, type Message, type Space } from './session';
import { el } from './text';

const app = document.getElementById('app')!;

function show(...nodes: Node[]) {
  app.replaceChildren(...nodes);
}

function failure(title: string, e: unknown, cfg?: OrgConfig): HTMLElement {
  const box = el('div', { class: 'center' }, el('h1', {}, title), el('p', { class: 'error', role: 'alert' }, String((e as Error)?.message ?? e)));
  if (cfg) {
    const again = el('button', { type: 'button', class: 'primary' }, 'Sign in again');
    again.addEventListener('click', () => void beginLogin(cfg));
    box.append(again);
  }
  return box;
}

function signInScreen(cfg: OrgConfig) {
  const button = el('button', { type: 'button', class: 'primary' }, 'Sign in');
  button.addEventListener('click', () => void beginLogin(cfg));
  show(
    el(
      'div',
      { class: 'center' },
      el('h1', {}, 'Custos'),
      el('p', {}, `End-to-end encrypted messaging for ${cfg.org}. Your keys come from your organization's KMS, never from the service provider.`),
      button,
    ),
  );
}

function describe(m: Message): { text: string; unreadable: boolean } {
  const c = m.content;
  switch (c.type) {
    case 'text':
      return { text: c.text ?? '', unreadable: false };
    case 'edit':
      return { text: `(edited) ${c.text ?? ''}`, unreadable: false };
    case 'reaction':
      return { text: `reacted ${c.emoji ?? ''}`, unreadable: false };
    case 'title':
      return { text: `renamed the space to “${c.title ?? ''}”`, unreadable: false };
    case 'member_added':
      return { text: `${c.user} joined`, unreadable: false };
    case 'member_removed':
      return { text: `${c.user} left or was removed`, unreadable: false };
    case 'deleted':
      return { text: 'message deleted', unreadable: false };
    case 'file_ready':
      return { text: 'shared a file', unreadable: false };
    default:
      return { text: `Unreadable: ${c.reason ?? 'unknown reason'}`, unreadable: true };
  }
}

async function signedIn(session: Session) {
  const who = el('span', { class: 'who' }, session.userId);
  const logout = el('button', { type: 'button' }, 'Log out');
  const state = el('span', { class: 'who', role: 'status', 'aria-label': 'Connection' }, 'connecting');
  const nav = el('nav', { 'aria-label': 'Spaces' }, el('h2', {}, 'Spaces'));
  const list = el('ul', {});
  const newTitle = el('input', { 'aria-label': 'New space name', placeholder: 'New space', maxlength: '200', required: '' });
  const newMembers = el('input', { 'aria-label': 'Members', placeholder: 'Members: bob@acme.test, …' });
  const create = el('button', { type: 'submit' }, 'Create space');
  const createProblem = el('div', { role: 'alert' });
  const createForm = el('form', { class: 'create', 'aria-label': 'Create a space' }, newTitle, newMembers, create, createProblem);
  nav.append(list, createForm);
  const pane = el('section', { class: 'space', 'aria-label': 'Space' }, el('p', { class: 'status' }, 'Choose a space.'));
  show(el('header', {}, el('h1', {}, 'Custos'), state, who, logout), el('div', { class: 'layout' }, nav, pane));

  let current: string | null = null;
  let timeline: HTMLOListElement | null = null;
  const shown = new Set<string>();
  const unread = new Map<string, number>();
  let spaces: Space[] = [];

  const render = (m: Message) => {
    const k = `${m.spaceId}:${m.seq}`;
    if (shown.has(k) || !timeline || m.spaceId !== current) return;
    shown.add(k);
    const d = describe(m);
    timeline.append(
      el(
        'li',
        { 'data-seq': String(m.seq) },
        el('div', { class: 'meta' }, `${m.sender} · ${new Date(m.storedAt).toLocaleTimeString()}`),
        el('div', { class: d.unreadable ? 'text unreadable' : 'text' }, d.text),
      ),
    );
    timeline.scrollTop = timeline.scrollHeight;
  };

  const drawList = () => {
    list.replaceChildren(
      ...spaces.map((s) => {
        const name = s.title ?? `Unreadable space (${s.titleError})`;
        const n = unread.get(s.id) ?? 0;
        const b = el('button', { type: 'button', 'aria-current': String(s.id === current) }, el('span', {}, name));
        if (n > 0) b.append(el('span', { class: 'unread', 'aria-label': `${n} unread` }, String(n)));
        b.addEventListener('click', () => void openSpace(s));
        return el('li', {}, b);
      }),
    );
  };

  const openSpace = async (s: Space) => {
    current = s.id;
    unread.set(s.id, 0);
    drawList();
    shown.clear();
    timeline = el('ol', { class: 'timeline', role: 'log', 'aria-label': 'Messages' });
    const input = el('textarea', { 'aria-label': 'Message', rows: '1', maxlength: '31744', placeholder: 'Write a message' });
    const send = el('button', { type: 'submit', class: 'primary' }, 'Send');
    const form = el('form', { class: 'composer', 'aria-label': 'Send a message' }, input, send);
    const problem = el('div', { role: 'alert' });
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const text = input.value.trim();
      if (!text) return;
      send.disabled = true;
      problem.replaceChildren();
      try {
        render(await session.send(s.id, text));
        input.value = '';
      } catch (e) {
        problem.replaceChildren(el('p', { class: 'error' }, `Not sent: ${(e as Error).message}`));
      } finally {
        send.disabled = false;
        input.focus();
      }
    });
    input.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' && !ev.shiftKey) {
        ev.preventDefault();
        form.requestSubmit();
      }
    });
    pane.replaceChildren(el('h2', {}, s.title ?? 'Unreadable space'), timeline, problem, form);
    for (const m of await session.history(s.id)) render(m);
  };

  createForm.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const title = newTitle.value.trim();
    if (!title) return;
    create.disabled = true;
    createProblem.replaceChildren();
    try {
      const id = await session.createSpace(title, newMembers.value.split(/[\s,;]+/));
      newTitle.value = '';
      newMembers.value = '';
      spaces = await session.listSpaces();
      drawList();
      const made = spaces.find((s) => s.id === id);
      if (made) await openSpace(made);
    } catch (e) {
      createProblem.replaceChildren(el('p', { class: 'error' }, `Not created: ${(e as Error).message}`));
    } finally {
      create.disabled = false;
    }
  });

  spaces = await session.listSpaces();
  for (const s of spaces) unread.set(s.id, Math.max(0, s.lastSeq - s.readSeq));
  drawList();
  if (spaces.length === 0) pane.replaceChildren(el('p', { class: 'status' }, 'You are in no space yet.'));

  // Live from where each space's list left off.
  const stop = session.live(
    (m) => {
      if (!spaces.some((s) => s.id === m.spaceId)) {
        // Added to a space since: it is in the session's list now.
        spaces = session.known();
        unread.set(m.spaceId, 0);
      }
      if (m.spaceId === current) render(m);
      else {
        unread.set(m.spaceId, (unread.get(m.spaceId) ?? 0) + 1);
        drawList();
      }
    },
    (s) => (state.textContent = s),
  );
  logout.addEventListener('click', async () => {
    stop();
    session.close();
    sessionStorage.clear();
    await forget(session.cfg.org);
    location.replace(`${location.origin}/`);
  });
}

async function start() {
  let cfg: OrgConfig;
  try {
    cfg = await loadConfig();
    await loadEngine();
  } catch (e) {
    show(failure('Custos cannot start', e));
    return;
  }
  let tokens: Tokens;
  if (isCallback()) {
    show(el('p', { class: 'status' }, 'Signing in…'));
    try {
      tokens = await finishLogin(cfg);
    } catch (e) {
      show(failure('Signing in failed', e, cfg));
      return;
    }
  } else {
    const kept = await keptRefreshToken(cfg.org);
    if (!kept) {
      signInScreen(cfg);
      return;
    }
    show(el('p', { class: 'status' }, 'Signing in…'));
    try {
      tokens = await resume(cfg, kept);
    } catch {
      // Expired, revoked, or the user is gone: sign in afresh.
      await forget(cfg.org);
      signInScreen(cfg);
      return;
    }
  }
  try {
    await keepRefreshToken(cfg.org, tokens.refresh);
    const session = new Session(cfg, tokens);
    await session.open();
    await signedIn(session);
  } catch (e) {
    show(failure('Signing in failed', e, cfg));
  }
}

void start();
