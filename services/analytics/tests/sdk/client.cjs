// Drives the edge with the published @openpanel/sdk, as an app would.
const { OpenPanel } = require('@openpanel/sdk');

async function main() {
  const op = new OpenPanel({
    apiUrl: process.env.API_URL,
    clientId: process.env.CLIENT_ID,
    clientSecret: process.env.CLIENT_SECRET,
    maxRetries: 0,
  });
  await op.identify({ profileId: 'sdk-user', firstName: 'Ada', email: 'ada@example.com' });
  const tracked = await op.track('sdk_purchase', { amount: 42 });
  if (!tracked || !tracked.deviceId) throw new Error('track got no deviceId: ' + JSON.stringify(tracked));
  await op.increment({ profileId: 'sdk-user', property: 'logins', value: 2 });
  await op.decrement({ profileId: 'sdk-user', property: 'credits', value: 1 });
  console.log('sent 4 calls; deviceId', op.getDeviceId());
}

main().catch((e) => { console.error(e); process.exit(1); });
