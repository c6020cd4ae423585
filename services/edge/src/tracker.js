/* First-party analytics tracker (README, "Tracker"): no cookies, no stored ids. */
(function (w, d, l) {
  var s = d.currentScript, n = navigator, last, profile;
  if (!s || (w.analytics && w.analytics.v)) return;
  function attr(k) { return s.getAttribute('data-' + k); }
  var id = attr('client-id'), ref = d.referrer, hash = attr('hash-routing') != null;
  var api = (attr('api') || s.src.replace(/\/tracker\.js([?#].*)?$/, '')).replace(/\/+$/, '');
  var dnt = attr('respect-dnt') != null && (n.doNotTrack == '1' || w.doNotTrack == '1');
  var dl = attr('downloads');
  var exts = dl == null ? 0 : (dl || 'pdf,zip,gz,tgz,dmg,exe,msi,pkg,apk,csv,xlsx,docx,pptx,mp3,mp4').split(',');

  function send(type, payload) {
    var off = dnt || !id;
    try { off = off || localStorage.getItem('analytics:disabled') == '1'; } catch (e) {}
    if (off) return;
    fetch(api + '/track', {
      method: 'POST', keepalive: true, credentials: 'omit',
      headers: { 'content-type': 'application/json', 'openpanel-client-id': id, 'openpanel-sdk-name': 'tracker' },
      body: JSON.stringify({ type: type, payload: payload })
    }).catch(function () {});
  }

  function track(name, props) {
    var p = {}, k;
    for (k in props) p[k] = props[k];
    p.__path = l.href;
    p.__referrer = ref;
    send('track', { name: name, properties: p, profileId: profile });
  }

  function view() {
    var u = hash ? l.href : l.href.split('#')[0];
    if (u == last) return;
    if (last) ref = last;
    last = u;
    track('screen_view', { __title: d.title });
  }

  function call(cmd, a, b, c) {
    var t, k;
    if (cmd == 'track') track(a, b);
    else if (cmd == 'identify') {
      profile = a;
      t = { profileId: a, properties: {} };
      for (k in b) (/^(firstName|lastName|email|avatar)$/.test(k) ? t : t.properties)[k] = b[k];
      send('identify', t);
    } else if (cmd == 'increment' || cmd == 'decrement') {
      send(cmd, { profileId: a, property: b, value: c == null ? 1 : c });
    }
  }
  call.v = 1;

  ['pushState', 'replaceState'].forEach(function (m) {
    var o = history[m];
    history[m] = function () {
      var r = o.apply(this, arguments);
      view();
      return r;
    };
  });
  w.addEventListener('popstate', view);
  if (hash) w.addEventListener('hashchange', view);

  d.addEventListener('click', function (e) {
    var t = e.target, el, a, p = {}, i, m, u, x;
    if (!t.closest) t = t.parentElement;
    if (!t) return;
    if ((el = t.closest('[data-track]'))) {
      for (i = 0; i < el.attributes.length; i++) {
        if ((m = /^data-track-(.+)/.exec(el.attributes[i].name))) p[m[1]] = el.attributes[i].value;
      }
      return track(el.getAttribute('data-track'), p);
    }
    if (!(a = t.closest('a[href]'))) return;
    u = new URL(a.href, l.href);
    x = u.pathname.split('.');
    if (exts && x.length > 1 && exts.indexOf(x.pop().toLowerCase()) >= 0) track('file_download', { href: u.href });
    else if (/^https?:$/.test(u.protocol) && u.host != l.host) track('link_out', { href: u.href });
  }, true);

  var queued = (w.analytics && w.analytics.q) || [];
  w.analytics = call;
  for (var i = 0; i < queued.length; i++) call.apply(0, queued[i]);
  view();
})(window, document, location);
