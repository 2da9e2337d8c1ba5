// A real OpenID provider for the SSO integration test (tests/integration/test_sso_edge.py):
// oidc-provider with two users in different groups, PKCE required, RP-initiated logout.
// Usage: node idp.mjs PORT CLIENT_ID CLIENT_SECRET EDGE_ORIGIN
import Provider from 'oidc-provider';

const [port, clientId, clientSecret, edge] = process.argv.slice(2);
const issuer = `http://127.0.0.1:${port}`;
const users = {
  alice: { sub: 'alice', email: 'alice@clinic.example', email_verified: true, groups: ['nurses'] },
  bob: { sub: 'bob', email: 'bob@clinic.example', email_verified: true, groups: ['billing'] },
};

const provider = new Provider(issuer, {
  clients: [{
    client_id: clientId,
    client_secret: clientSecret,
    redirect_uris: [`${edge}/_sso/callback`],
    post_logout_redirect_uris: [`${edge}/_sso/signed-out`],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  claims: { openid: ['sub'], email: ['email', 'email_verified'], groups: ['groups'] },
  scopes: ['openid', 'email', 'groups'],
  // The groups claim goes into the ID token (as Entra, Okta and Keycloak can be told to do).
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  features: { devInteractions: { enabled: true }, rpInitiatedLogout: { enabled: true } },
  cookies: { keys: ['test-only-cookie-key-0123456789abcdef'] },
  async findAccount(ctx, id) {
    if (!users[id]) return undefined;
    return { accountId: id, async claims() { return users[id]; } };
  },
  // A first-party client: no consent screen.
  async loadExistingGrant(ctx) {
    const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope('openid email groups');
    await grant.save();
    return grant;
  },
});
provider.listen(Number(port), '127.0.0.1', () => console.log(`listening ${issuer}`));
